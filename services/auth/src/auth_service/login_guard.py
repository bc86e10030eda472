"""Login protection that stops guessing, not customers (OWASP's authentication guidance).

Only failed logins count, in Redis, so the limits hold across API processes:

- **account + IP pair**: after ``pair_failures`` consecutive failures the pair is blocked
  (429 with ``Retry-After``) for ``block_seconds``, doubled on every further block up to
  ``block_max_seconds``; a successful login resets it.
- **IP**: a much higher ceiling of failures across all accounts (credential stuffing).
- **account**, across all IPs: a higher threshold still, and past it only the IPs that already
  failed for that account are refused, so a stranger guessing from elsewhere cannot lock the
  owner out.

Every limit counts *completed* failures: a login whose password was right, or whose outcome is
unknown (the client went away, the database failed), never counts, so concurrent logins of one
account or from one IP (several tabs, an app's retries, an office behind one NAT) block nothing.
Guesses sent in parallel cannot outrun the count either: at most ``pair_in_flight`` attempts of
a pair are checked at once, and an attempt that would take the IP or the account past its limit
if every attempt in flight failed waits too (429 for a second, the time they take to end).
When Redis cannot be reached the guard lets the attempt through (the password check still
decides) and counts ``login_guard_unavailable_total``."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from auth_service.metrics import LOGIN_GUARD_UNAVAILABLE
from order_common.errors import TooManyRequests
from order_common.logging import OUTAGE_WARNINGS
from order_common.metrics import RATE_LIMIT_REJECTIONS

logger = logging.getLogger(__name__)

# KEYS (every script): pair hash (fails, blocks), pair block, IP failures, account failures,
# account's IPs, and the attempts in flight of the pair, the IP and the account.
#
# _ADMIT ARGV: ip, ip_failures, ip_window_s, account_failures, account_window_s, pair_in_flight,
# in_flight_ttl_s. Returns {scope, retry_after_ms} when refused, {"", 0} when admitted (the
# attempt is then in flight until one of the scripts below ends it). A limit that completed
# failures reached refuses until its window ends; one that the attempts in flight would reach
# if they all failed refuses for a second, the time they take to end.
_ADMIT = """
local block_ttl = redis.call('PTTL', KEYS[2])
if block_ttl > 0 then return {'login-pair', block_ttl} end
local ip_fails = tonumber(redis.call('GET', KEYS[3]) or '0')
if ip_fails >= tonumber(ARGV[2]) then return {'login-ip', redis.call('PTTL', KEYS[3])} end
local account_fails = tonumber(redis.call('GET', KEYS[4]) or '0')
local known_ip = redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 1
if known_ip and account_fails >= tonumber(ARGV[4]) then
  return {'login-account', redis.call('PTTL', KEYS[4])}
end
if tonumber(redis.call('GET', KEYS[6]) or '0') >= tonumber(ARGV[6])
    or ip_fails + tonumber(redis.call('GET', KEYS[7]) or '0') >= tonumber(ARGV[2])
    or (known_ip
        and account_fails + tonumber(redis.call('GET', KEYS[8]) or '0') >= tonumber(ARGV[4])) then
  return {'login-in-flight', 1000}
end
-- The expiry is set once, when a count starts: a count left by a process that died mid-login
-- goes away with it even while others keep logging in.
for k = 6, 8 do
  if redis.call('INCR', KEYS[k]) == 1 then redis.call('EXPIRE', KEYS[k], ARGV[7]) end
end
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('EXPIRE', KEYS[5], ARGV[5])
return {'', 0}
"""

# The attempt is no longer in flight.
_LANDED = """
for k = 6, 8 do
  if redis.call('DECR', KEYS[k]) <= 0 then redis.call('DEL', KEYS[k]) end
end
"""

# The password was wrong. ARGV: pair_failures, block_ms, block_max_ms, forget_s, ip_window_s,
# account_window_s.
_FAILED = (
    _LANDED
    + """
if redis.call('INCR', KEYS[3]) == 1 then redis.call('EXPIRE', KEYS[3], ARGV[5]) end
if redis.call('INCR', KEYS[4]) == 1 then redis.call('EXPIRE', KEYS[4], ARGV[6]) end
local fails = redis.call('HINCRBY', KEYS[1], 'fails', 1)
if fails >= tonumber(ARGV[1]) then
  local blocks = redis.call('HINCRBY', KEYS[1], 'blocks', 1)
  local ms = math.min(tonumber(ARGV[2]) * math.pow(2, math.min(blocks - 1, 30)),
                      tonumber(ARGV[3]))
  redis.call('SET', KEYS[2], '1', 'PX', math.floor(ms))
  redis.call('HSET', KEYS[1], 'fails', 0)
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 0
"""
)

# The password was right: forget the pair's failures. ARGV: ip.
_SUCCEEDED = (
    _LANDED
    + """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[5], ARGV[1])
return 0
"""
)

# The attempt ended undecided (cancelled, or the user could not be read): as if never made.
_ABANDONED = _LANDED + "return 0\n"

# How long an attempt may count as in flight: a process that dies mid-login leaves it behind.
IN_FLIGHT_TTL_SECONDS = 30


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
    pair_in_flight: int = 10


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
        self._failed = redis.register_script(_FAILED)
        self._succeeded = redis.register_script(_SUCCEEDED)
        self._abandoned = redis.register_script(_ABANDONED)

    def _keys(self, account: str, ip: str) -> list[str]:
        digest = account_digest(account)
        pair = f"{self._prefix}:pair:{digest}:{ip}"
        account_key = f"{self._prefix}:account:{digest}"
        return [
            pair,
            f"{pair}:block",
            f"{self._prefix}:ip:{ip}",
            account_key,
            f"{account_key}:ips",
            f"{pair}:in-flight",
            f"{self._prefix}:ip:{ip}:in-flight",
            f"{account_key}:in-flight",
        ]

    async def admit(self, account: str, ip: str) -> None:
        """Refuse (429) when one of the limits is spent; otherwise the attempt is in flight
        until :meth:`failed`, :meth:`succeeded` or :meth:`abandoned` ends it (one of them, once).
        ``account`` is the normalised email."""
        if not self.enabled:
            return
        p = self._policy
        try:
            scope, retry_ms = await self._admit(
                keys=self._keys(account, ip),
                args=[
                    ip,
                    p.ip_failures,
                    p.ip_window_seconds,
                    p.account_failures,
                    p.account_window_seconds,
                    p.pair_in_flight,
                    IN_FLIGHT_TTL_SECONDS,
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
        reason = (
            "too many logins of this account at once"
            if scope == "login-in-flight"
            else "too many failed logins"
        )
        raise LoginRefused(
            f"{reason}; retry in {retry_after} s", headers={"Retry-After": str(retry_after)}
        )

    async def failed(self, account: str, ip: str) -> None:
        """The admitted attempt's password was wrong: one more consecutive failure of the pair,
        blocked once there are ``pair_failures``."""
        p = self._policy
        block_ms, block_max_ms = int(p.block_seconds * 1000), int(p.block_max_seconds * 1000)
        await self._end(
            self._failed,
            account,
            ip,
            (
                p.pair_failures,
                block_ms,
                block_max_ms,
                p.forget_seconds,
                p.ip_window_seconds,
                p.account_window_seconds,
            ),
        )

    async def succeeded(self, account: str, ip: str) -> None:
        """The admitted attempt's password was right: the pair's failures are forgotten."""
        await self._end(self._succeeded, account, ip, [ip])

    async def abandoned(self, account: str, ip: str) -> None:
        """The admitted attempt ended without a verdict: it counts for nothing."""
        await self._end(self._abandoned, account, ip, [])

    async def _end(
        self, script: AsyncScript, account: str, ip: str, args: Sequence[str | int]
    ) -> None:
        if not self.enabled:
            return
        try:
            await script(keys=self._keys(account, ip), args=args)
        except Exception as exc:
            LOGIN_GUARD_UNAVAILABLE.inc()
            OUTAGE_WARNINGS.warning(
                logger, "login guard unavailable, outcome not recorded: %s", exc
            )
