"""The order cache in Redis. It is an optimisation only: every Redis failure is logged, counted
and answered from PostgreSQL, never turned into an error response.

An entry is ``o1 <version> <user_id> <body>``: the row version (for the guard below), the
owner (checked on every hit), and the response body exactly as the API serialises the order
(``order_json``), so a hit is answered with the stored bytes, without a model round trip."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from limits import RateLimitItem
from pydantic import TypeAdapter
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from order_common.logging import OUTAGE_WARNINGS
from order_common.orders import OrderRead
from order_common.ratelimit import RateLimiter
from orders_service.metrics import CACHE_OPERATIONS

logger = logging.getLogger(__name__)

# What FastAPI does with a route's response_model: the TypeAdapter's dump_json, by alias.
_ORDER = TypeAdapter(OrderRead)
_ENTRY = re.compile(rb"o1 (\d{1,19}) (\d{1,19}) (\{.*\})\Z", re.S)


def order_json(order: OrderRead) -> bytes:
    """The order as the API answers it, byte for byte."""
    return _ORDER.dump_json(order, by_alias=True)


def _entry_value(version: int, user_id: int, body: bytes) -> bytes:
    return b"o1 %d %d %s" % (version, user_id, body)


# Store the entry unless the cached one has a higher version. Writers finish in any order
# (a request that read the row before a PATCH may fill the cache after the PATCH refreshed
# it); comparing versions atomically keeps the newest state. An entry of the JSON form that
# came before (`{..., "version": N}`) is compared by its version too, so a rolling upgrade
# keeps the guard.
_STORE_IF_NOT_OLDER = """
local current = redis.call('GET', KEYS[1])
if current then
  local cached_version = tonumber(string.match(current, '^o1 (%d+) '))
  if not cached_version then
    local ok, cached = pcall(cjson.decode, current)
    if ok and type(cached) == 'table' then
      cached_version = tonumber(cached['version'])
    end
  end
  if cached_version and cached_version > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""

_FAILURES = (RedisError, OSError)


@dataclass(frozen=True)
class CachedOrder:
    version: int
    user_id: int
    body: bytes  # order_json of the order at that version


class OrderCache:
    def __init__(self, redis: Redis, *, key_prefix: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._key_prefix = key_prefix
        self._ttl_seconds = ttl_seconds
        self._store = redis.register_script(_STORE_IF_NOT_OLDER)

    def key(self, order_id: uuid.UUID) -> str:
        return f"{self._key_prefix}:order:{order_id}"

    async def get_entry(self, order_id: uuid.UUID) -> CachedOrder | None:
        try:
            raw = cast(bytes | None, await self._redis.get(self.key(order_id)))
        except _FAILURES as exc:
            self._failed("get", order_id, exc)
            return None
        return self._entry(order_id, raw)

    async def get_rate_limited(
        self,
        order_id: uuid.UUID,
        limiter: RateLimiter,
        limit: RateLimitItem,
        scope: str,
        *identifiers: str,
    ) -> CachedOrder | None:
        """The rate limit check (429 when spent) and the entry, in one Redis round trip."""
        read = await limiter.hit_and_get(limit, scope, *identifiers, key=self.key(order_id))
        if not read.ok:
            CACHE_OPERATIONS.labels(op="get", result="error").inc()
            OUTAGE_WARNINGS.warning(
                logger,
                "order cache unavailable, using the database",
                extra={"op": "get", "order_id": str(order_id)},
            )
            return None
        return self._entry(order_id, read.value)

    async def get(self, order_id: uuid.UUID) -> OrderRead | None:
        entry = await self.get_entry(order_id)
        return None if entry is None else OrderRead.model_validate_json(entry.body)

    def _entry(self, order_id: uuid.UUID, raw: bytes | None) -> CachedOrder | None:
        if raw is None:
            CACHE_OPERATIONS.labels(op="get", result="miss").inc()
            return None
        # Only this service writes entries, so the shape check is enough: the body was
        # serialised from a validated OrderRead. Anything else (an entry of the JSON form that
        # came before, a stray write) is read from the database and replaced.
        match = _ENTRY.match(raw)
        if match is None:
            CACHE_OPERATIONS.labels(op="get", result="invalid").inc()
            logger.warning(
                "unreadable order cache entry, reading the database",
                extra={"order_id": str(order_id)},
            )
            return None
        CACHE_OPERATIONS.labels(op="get", result="hit").inc()
        return CachedOrder(int(match[1]), int(match[2]), match[3])

    async def put(self, order: OrderRead, version: int) -> bytes:
        """Cache ``order`` as of row ``version``; an entry of a later version is kept. Returns
        the order's body (``order_json``), for a caller that answers with it."""
        body = order_json(order)
        value = _entry_value(version, order.user_id, body)
        try:
            stored = await self._store(
                keys=[self.key(order.id)], args=[value, version, self._ttl_seconds]
            )
        except _FAILURES as exc:
            self._failed("put", order.id, exc)
            return body
        CACHE_OPERATIONS.labels(op="put", result="ok" if stored else "stale").inc()
        return body

    async def put_many(self, entries: Sequence[tuple[OrderRead, int]]) -> None:
        """``put`` for each (order, version), in one round trip: a pipeline of EVALSHA. (A
        Script in a pipeline would first ask SCRIPT EXISTS, a round trip of its own.) Only if
        Redis lost the script (a restart, SCRIPT FLUSH) does it load it and send again: the
        version guard makes a second store of the same entry harmless."""
        if not entries:
            return
        stores = [
            (self.key(order.id), _entry_value(version, order.user_id, order_json(order)), version)
            for order, version in entries
        ]
        try:
            results = await self._evalsha_all(stores)
            if any(isinstance(result, NoScriptError) for result in results):
                await self._redis.script_load(_STORE_IF_NOT_OLDER)
                results = await self._evalsha_all(stores)
            failure = next((r for r in results if isinstance(r, Exception)), None)
            if failure is not None:
                raise failure
        except _FAILURES as exc:
            CACHE_OPERATIONS.labels(op="put", result="error").inc(len(entries))
            OUTAGE_WARNINGS.warning(
                logger,
                "order cache unavailable for %d entries, using the database",
                len(entries),
                extra={"op": "put", "error": f"{type(exc).__name__}: {exc}"},
            )
            return
        for stored in results:
            CACHE_OPERATIONS.labels(op="put", result="ok" if stored else "stale").inc()

    async def _evalsha_all(self, stores: Sequence[tuple[str, bytes, int]]) -> list[object]:
        """One pipeline of the store script's EVALSHA per (key, value, version); the replies,
        errors included (a NOSCRIPT is answered per command)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, value, version in stores:
                pipe.evalsha(self._store.sha, 1, key, value, version, self._ttl_seconds)
            return list(await pipe.execute(raise_on_error=False))

    def _failed(self, op: str, order_id: uuid.UUID, exc: BaseException) -> None:
        CACHE_OPERATIONS.labels(op=op, result="error").inc()
        OUTAGE_WARNINGS.warning(
            logger,
            "order cache unavailable, using the database",
            extra={"op": op, "order_id": str(order_id), "error": f"{type(exc).__name__}: {exc}"},
        )
