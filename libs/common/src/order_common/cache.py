"""Redis client construction. Short timeouts: a dead Redis must degrade a request, not stall it."""

from __future__ import annotations

from redis.asyncio import Redis


def build_redis(url: str, timeout_seconds: float) -> Redis:
    return Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        decode_responses=False,
        health_check_interval=30,
    )
