"""The order cache in Redis. It is an optimisation only: every Redis failure is logged, counted
and answered from PostgreSQL, never turned into an error response."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from order_common.orders import OrderRead
from orders_service.metrics import CACHE_OPERATIONS

logger = logging.getLogger(__name__)

# Store the entry unless the cached one has a higher version. Writers finish in any order
# (a request that read the row before a PATCH may fill the cache after the PATCH refreshed
# it); comparing versions atomically keeps the newest state.
_STORE_IF_NOT_OLDER = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, cached = pcall(cjson.decode, current)
  if ok and type(cached) == 'table' then
    local cached_version = tonumber(cached['version'])
    if cached_version and cached_version > tonumber(ARGV[2]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""

_FAILURES = (RedisError, OSError)


class OrderCache:
    def __init__(self, redis: Redis, *, key_prefix: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._key_prefix = key_prefix
        self._ttl_seconds = ttl_seconds
        self._store = redis.register_script(_STORE_IF_NOT_OLDER)

    def key(self, order_id: uuid.UUID) -> str:
        return f"{self._key_prefix}:order:{order_id}"

    async def get(self, order_id: uuid.UUID) -> OrderRead | None:
        try:
            raw = await self._redis.get(self.key(order_id))
        except _FAILURES as exc:
            self._failed("get", order_id, exc)
            return None
        if raw is None:
            CACHE_OPERATIONS.labels(op="get", result="miss").inc()
            return None
        try:
            # The entry is OrderRead's JSON plus its "version", which validation ignores.
            order = OrderRead.model_validate_json(raw)
        except ValidationError as exc:
            CACHE_OPERATIONS.labels(op="get", result="invalid").inc()
            logger.warning(
                "unreadable order cache entry, reading the database",
                extra={"order_id": str(order_id), "error": str(exc)},
            )
            return None
        CACHE_OPERATIONS.labels(op="get", result="hit").inc()
        return order

    async def put(self, order: OrderRead, version: int) -> None:
        """Cache ``order`` as of row ``version``; an entry of a later version is kept."""
        value = json.dumps({**order.model_dump(mode="json"), "version": version})
        try:
            stored = await self._store(
                keys=[self.key(order.id)], args=[value, version, self._ttl_seconds]
            )
        except _FAILURES as exc:
            self._failed("put", order.id, exc)
            return
        CACHE_OPERATIONS.labels(op="put", result="ok" if stored else "stale").inc()

    async def put_many(self, entries: Sequence[tuple[OrderRead, int]]) -> None:
        """``put`` for each (order, version), in one round trip."""
        if not entries:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for order, version in entries:
                    value = json.dumps({**order.model_dump(mode="json"), "version": version})
                    await self._store(
                        keys=[self.key(order.id)],
                        args=[value, version, self._ttl_seconds],
                        client=pipe,
                    )
                results = await pipe.execute()
        except _FAILURES as exc:
            CACHE_OPERATIONS.labels(op="put", result="error").inc(len(entries))
            logger.warning(
                "order cache unavailable for %d entries, using the database",
                len(entries),
                extra={"op": "put", "error": f"{type(exc).__name__}: {exc}"},
            )
            return
        for stored in results:
            CACHE_OPERATIONS.labels(op="put", result="ok" if stored else "stale").inc()

    def _failed(self, op: str, order_id: uuid.UUID, exc: BaseException) -> None:
        CACHE_OPERATIONS.labels(op=op, result="error").inc()
        logger.warning(
            "order cache unavailable, using the database",
            extra={"op": op, "order_id": str(order_id), "error": f"{type(exc).__name__}: {exc}"},
        )
