"""Rate limits kept in Redis (so they hold across replicas), checked with the async API of
``limits`` so the event loop never blocks. If Redis is unreachable the limiter fails open:
availability of the shop beats strict limiting, and the failure is logged."""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from order_common.errors import TooManyRequests
from order_common.metrics import RATE_LIMIT_REJECTIONS

logger = logging.getLogger(__name__)


def parse_limit(value: str) -> RateLimitItem:
    """``"10/minute"``, ``"300 per minute"``: the notation of ``limits``."""
    return parse(value)


class RateLimiter:
    def __init__(
        self, redis_url: str, *, key_prefix: str, timeout: float = 0.5, enabled: bool = True
    ) -> None:
        self.enabled = enabled
        uri = redis_url.replace("redis://", "async+redis://", 1).replace(
            "rediss://", "async+rediss://", 1
        )
        self._storage = RedisStorage(
            uri,
            implementation="redispy",
            key_prefix=f"{key_prefix}:ratelimit",
            wrap_exceptions=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )
        self._strategy = MovingWindowRateLimiter(self._storage)

    async def hit(self, limit: RateLimitItem, scope: str, *identifiers: str) -> None:
        """Count one request against ``limit``; raise 429 with Retry-After when it is spent."""
        if not self.enabled:
            return
        try:
            if await self._strategy.hit(limit, scope, *identifiers):
                return
            stats = await self._strategy.get_window_stats(limit, scope, *identifiers)
        except Exception as exc:  # storage down: fail open, but say so
            logger.warning("rate limit storage unavailable, not limiting: %s", exc)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        RATE_LIMIT_REJECTIONS.labels(scope).inc()
        raise TooManyRequests(
            f"rate limit exceeded: {limit}; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    async def reset(self) -> None:
        await self._storage.reset()

    async def aclose(self) -> None:
        """Close the storage's Redis connection pool, for the lifespan's shutdown. ``limits``
        has no public close; its bridge holds the redis-py client."""
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()
