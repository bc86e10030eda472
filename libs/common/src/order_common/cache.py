"""Redis client construction. Short timeouts: a dead Redis must degrade a request, not stall it."""

from __future__ import annotations

from redis.asyncio import Redis

from order_common.telemetry import instrument_redis


def build_redis(url: str, timeout_seconds: float) -> Redis:
    """A client whose commands are traced (spans once ``setup_telemetry`` ran)."""
    client = Redis.from_url(
        url,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        decode_responses=False,
        health_check_interval=30,
    )
    instrument_redis(client)
    return client
