"""Login protection that stops guessing, not customers (OWASP's authentication guidance).

Only failed logins count, in Redis, so the limits hold across API processes:

- **account + IP pair**: after ``pair_failures`` consecutive failures the pair is blocked
  (429 with ``Retry-After``) for ``block_seconds``, doubled on every further block up to
  ``block_max_seconds``; a successful login resets it.
- **IP**: a much higher ceiling of failures across all accounts (credential stuffing).
- **account**, across all IPs: a higher threshold still, and past it only the IPs that already
  failed for that account are refused, so a stranger guessing from elsewhere cannot lock the
  owner out.

An attempt is counted as a failure when it is admitted (before the password check), and a
success takes the count back: parallel guesses cannot outrun the counter, and successful logins
leave no trace. Accounts are keyed by a digest of the normalised email, never the email itself.
When Redis cannot be reached the guard lets the attempt through (the password check still
decides) and counts ``login_guard_unavailable_total``."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

from redis.asyncio import Redis

from auth_service.metrics import LOGIN_GUARD_UNAVAILABLE
from order_common.errors import TooManyRequests
from order_common.logging import OUTAGE_WARNINGS
from order_common.metrics import RATE_LIMIT_REJECTIONS

logger = logging.getLogger(__name__)

# KEYS: pair hash (fails, blocks), pair block, IP failures, account failures, account's IPs.
# ARGV: ip, pair_failures, block_ms, block_max_ms, ip_failures, ip_window_s, account_failures,
#       account_window_s, forget_s.
# Returns {scope, retry_after_ms} when refused, {"", 0} when admitted (and counted).
_ADMIT = """
local block_ttl = redis.call('PTTL', KEYS[2])
if block_ttl > 0 then return {'login-pair', block_ttl} end
if tonumber(redis.call('GET', KEYS[3]) or '0') >= tonumber(ARGV[5]) then
  return {'login-ip', redis.call('PTTL', KEYS[3])}
end
if tonumber(redis.call('GET', KEYS[4]) or '0') >= tonumber(ARGV[7])
    and redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 1 then
  return {'login-account', redis.call('PTTL', KEYS[4])}
end
redis.call('INCR', KEYS[3])
if redis.call('TTL', KEYS[3]) < 0 then redis.call('EXPIRE', KEYS[3], ARGV[6]) end
redis.call('INCR', KEYS[4])
if redis.call('TTL', KEYS[4]) < 0 then redis.call('EXPIRE', KEYS[4], ARGV[8]) end
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('EXPIRE', KEYS[5], ARGV[8])
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
if fails >= tonumber(ARGV[2]) then
  local blocks = redis.call('HINCRBY', KEYS[1], 'blocks', 1)
  local ms = math.min(tonumber(ARGV[3]) * math.pow(2, math.min(blocks - 1, 30)),
                      tonumber(ARGV[4]))
  redis.call('SET', KEYS[2], '1', 'PX', math.floor(ms))
  redis.call('HSET', KEYS[1], 'fails', 0)
end
redis.call('EXPIRE', KEYS[1], ARGV[9])
return {'', 0}
"""

# The attempt admitted by _ADMIT succeeded: forget the pair, take the attempt back elsewhere.
_SUCCEEDED = """
redis.call('DEL', KEYS[1], KEYS[2])
if tonumber(redis.call('GET', KEYS[3]) or '0') > 0 then redis.call('DECR', KEYS[3]) end
if tonumber(redis.call('GET', KEYS[4]) or '0') > 0 then redis.call('DECR', KEYS[4]) end
redis.call('SREM', KEYS[5], ARGV[1])
return 0
"""


@dataclass(frozen=True)
class LoginGuardPolicy:
    pair_failures: int = 5
    block_seconds: float = 30.0
    block_max_seconds: float = 900.0
    ip_failures: int = 100
    ip_window_seconds: int = 900
    account_failures: int = 50
    account_window_seconds: int = 900
    forget_seconds: int = 3600


class LoginRefused(TooManyRequests):
    """429: too many failed logins; ``Retry-After`` says when to try again."""


def account_digest(normalised_email: str) -> str:
    return hashlib.sha256(normalised_email.encode("utf-8")).hexdigest()


class LoginGuard:
    def __init__(
        self,
        redis: Redis,
        policy: LoginGuardPolicy,
        *,
        key_prefix: str,
        enabled: bool = True,
    ) -> None:
        self._redis = redis
        self._policy = policy
        self._prefix = f"{key_prefix}:login"
        self.enabled = enabled
        self._admit = redis.register_script(_ADMIT)
        self._succeeded = redis.register_script(_SUCCEEDED)

    def _keys(self, account: str, ip: str) -> list[str]:
        digest = account_digest(account)
        pair = f"{self._prefix}:pair:{digest}:{ip}"
        account_key = f"{self._prefix}:account:{digest}"
        return [pair, f"{pair}:block", f"{self._prefix}:ip:{ip}", account_key, f"{account_key}:ips"]

    async def admit(self, account: str, ip: str) -> None:
        """Refuse (429) when one of the limits is spent; otherwise count the attempt as a
        failure until :meth:`succeeded` takes it back. ``account`` is the normalised email."""
        if not self.enabled:
            return
        p = self._policy
        try:
            scope, retry_ms = await self._admit(
                keys=self._keys(account, ip),
                args=[
                    ip,
                    p.pair_failures,
                    int(p.block_seconds * 1000),
                    int(p.block_max_seconds * 1000),
                    p.ip_failures,
                    p.ip_window_seconds,
                    p.account_failures,
                    p.account_window_seconds,
                    p.forget_seconds,
                ],
            )
        except Exception as exc:  # Redis down or slow: fail open, but say so
            LOGIN_GUARD_UNAVAILABLE.inc()
            OUTAGE_WARNINGS.warning(logger, "login guard unavailable, not limiting: %s", exc)
            return
        scope = scope.decode() if isinstance(scope, bytes) else str(scope)
        if not scope:
            return
        retry_after = max(1, math.ceil(int(retry_ms) / 1000))
        RATE_LIMIT_REJECTIONS.labels(scope).inc()
        logger.info("login refused", extra={"scope": scope, "retry_after": retry_after})
        raise LoginRefused(
            f"too many failed logins; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    async def succeeded(self, account: str, ip: str) -> None:
        if not self.enabled:
            return
        try:
            await self._succeeded(keys=self._keys(account, ip), args=[ip])
        except Exception as exc:
            LOGIN_GUARD_UNAVAILABLE.inc()
            OUTAGE_WARNINGS.warning(
                logger, "login guard unavailable, success not recorded: %s", exc
            )
