"""Rate limits kept in Redis (so they hold across replicas), checked with one Lua script per
request on the async client, so the event loop never blocks.

The algorithm is GCRA (the generic cell rate algorithm): one key per limited identity holds its
"theoretical arrival time", so a check costs O(1) time and memory whatever the limit, against
Redis's clock (replicas with skewed clocks agree). ``N per P`` lets a burst of N through, then
one request every P/N as the allowance refills: the sustained rate is N per P, and a client
that was idle can add a burst of N on top (so a window of length P right after idleness may
see up to 2N - 1). The moving window it replaces counted exactly N per window, at the cost of
a sorted set of N entries per identity and a second round trip for the reset time on refusal.

A check can also read one more key in the same script (``hit_and_get``), so a request that
needs its rate limit and a cache entry pays one Redis round trip, not two.

If Redis is unreachable the limiter fails open: availability of the shop beats strict
limiting, and the failure is logged."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import cast

from limits import RateLimitItem, parse
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from order_common.errors import TooManyRequests
from order_common.logging import OUTAGE_WARNINGS
from order_common.metrics import RATE_LIMIT_REJECTIONS

logger = logging.getLogger(__name__)

# KEYS[1]: the identity's theoretical arrival time (integer microseconds, Redis clock); KEYS[2],
# optional: a key to GET when the request is allowed. ARGV: period and emission interval, in
# whole microseconds (the interval at least 1). Integers stay exact in Lua's doubles up to
# 2^53 (now is ~1.8e15 us): a sub-millisecond interval is never lost to rounding.
# The state lives until its arrival time has passed, and at least a second: a past arrival time
# counts as now, so keeping it longer changes nothing, while a limit with a sub-millisecond
# interval would otherwise write keys that expire before the next request reads them.
# Returns {1, 0, value-or-false} when allowed, {0, us until allowed} when refused.
_GCRA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local period = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allowed_at = new_tat - period
if allowed_at > now then
  return {0, allowed_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX',
           math.max(1000, math.ceil((new_tat - now) / 1000)))
if KEYS[2] then
  return {1, 0, redis.call('GET', KEYS[2])}
end
return {1, 0}
"""

_FAILURES = (RedisError, OSError)


def parse_limit(value: str) -> RateLimitItem:
    """``"10/minute"``, ``"300 per minute"``: the notation of ``limits``; at least 1 per
    period (a ValueError otherwise, so a setting is refused at start-up)."""
    limit = parse(value)
    if limit.amount < 1:
        raise ValueError(f"{value!r}: a limit lets at least one request through per period")
    return limit


@dataclass(frozen=True)
class Read:
    """What ``hit_and_get`` read: ``ok`` is False when Redis failed (the request was let
    through unlimited and the value is unknown, not absent)."""

    ok: bool
    value: bytes | None


class RateLimiter:
    def __init__(self, redis: Redis, *, key_prefix: str, enabled: bool = True) -> None:
        """``redis``: the process's client (its pool is shared with the cache; the lifespan
        that built it closes it)."""
        self.enabled = enabled
        self._redis = redis
        self._key_prefix = f"{key_prefix}:ratelimit"
        self._script = redis.register_script(_GCRA)

    def key(self, limit: RateLimitItem, scope: str, *identifiers: str) -> str:
        period = limit.get_expiry()
        return ":".join([self._key_prefix, scope, *identifiers, f"{limit.amount}per{period}s"])

    async def hit(self, limit: RateLimitItem, scope: str, *identifiers: str) -> None:
        """Count one request against ``limit``; raise 429 with Retry-After when it is spent."""
        if self.enabled:
            await self._check(limit, scope, identifiers, None)

    async def hit_and_get(
        self, limit: RateLimitItem, scope: str, *identifiers: str, key: str
    ) -> Read:
        """``hit``, and the value of ``key`` read in the same round trip (also when limiting
        is off: then the script is a plain GET)."""
        if not self.enabled:
            try:
                # decode_responses=False (order_common.cache.build_redis): bytes
                return Read(True, cast(bytes | None, await self._redis.get(key)))
            except _FAILURES:
                return Read(False, None)  # the caller's failure to log, not the limiter's
        return await self._check(limit, scope, identifiers, key)

    async def _check(
        self, limit: RateLimitItem, scope: str, identifiers: tuple[str, ...], key: str | None
    ) -> Read:
        period_us = limit.get_expiry() * 1_000_000
        interval_us = max(1, round(period_us / limit.amount))
        keys = [self.key(limit, scope, *identifiers)]
        if key is not None:
            keys.append(key)
        try:
            result = await self._script(keys=keys, args=[period_us, interval_us])
        except ResponseError as exc:
            # Redis answered but refused the script (a bug, or a Redis without scripting):
            # not limiting, and loudly; the cache read must not be lost with it.
            logger.error("rate limit script failed, not limiting: %s", exc)
            return await self._plain_get(key)
        except _FAILURES as exc:  # storage down: fail open, but say so
            OUTAGE_WARNINGS.warning(logger, "rate limit storage unavailable, not limiting: %s", exc)
            return Read(False, None)
        if int(result[0]) == 1:
            return Read(True, result[2] if len(result) > 2 else None)
        retry_after = max(1, math.ceil(int(result[1]) / 1_000_000))
        RATE_LIMIT_REJECTIONS.labels(scope).inc()
        raise TooManyRequests(
            f"rate limit exceeded: {limit}; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    async def _plain_get(self, key: str | None) -> Read:
        if key is None:
            return Read(True, None)
        try:
            return Read(True, cast(bytes | None, await self._redis.get(key)))
        except _FAILURES:
            return Read(False, None)

    async def reset(self) -> None:
        """Forget every count under this limiter's prefix (tests)."""
        keys = [key async for key in self._redis.scan_iter(match=f"{self._key_prefix}:*")]
        if keys:
            await self._redis.delete(*keys)
