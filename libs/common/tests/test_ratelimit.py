from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from order_common.cache import build_redis
from order_common.errors import TooManyRequests
from order_common.ratelimit import RateLimiter, parse_limit

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = build_redis(REDIS_URL, 0.5)
    yield client
    await client.aclose()


@pytest.fixture
async def limiter(redis: Redis) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(redis, key_prefix=f"test:{uuid.uuid4().hex}")
    yield limiter
    await limiter.reset()


def _rejections(scope: str) -> float:
    return REGISTRY.get_sample_value("rate_limit_rejections_total", {"scope": scope}) or 0.0


async def test_the_limit_is_enforced_with_retry_after(limiter: RateLimiter) -> None:
    limit = parse_limit("3/minute")
    for _ in range(3):
        await limiter.hit(limit, "token", "10.0.0.1")
    with pytest.raises(TooManyRequests) as raised:
        await limiter.hit(limit, "token", "10.0.0.1")
    assert raised.value.status_code == 429
    assert raised.value.headers is not None
    assert 1 <= int(raised.value.headers["Retry-After"]) <= 60


async def test_identifiers_are_counted_apart(limiter: RateLimiter) -> None:
    limit = parse_limit("1/minute")
    await limiter.hit(limit, "token", "a")
    # Another identity, and the same identity in another scope, each have their own allowance.
    await limiter.hit(limit, "token", "b")
    await limiter.hit(limit, "register", "a")
    # While each one's own is spent.
    for scope, identity in (("token", "a"), ("token", "b"), ("register", "a")):
        with pytest.raises(TooManyRequests):
            await limiter.hit(limit, scope, identity)


async def test_two_limiters_sharing_redis_share_the_count() -> None:
    # Two replicas of a service each build their own client and limiter against one Redis.
    prefix = f"test:{uuid.uuid4().hex}"
    clients = [build_redis(REDIS_URL, 0.5) for _ in range(2)]
    first, second = (RateLimiter(client, key_prefix=prefix) for client in clients)
    limit = parse_limit("2/minute")
    try:
        await first.hit(limit, "orders", "7")
        await second.hit(limit, "orders", "7")
        with pytest.raises(TooManyRequests):
            await first.hit(limit, "orders", "7")
        with pytest.raises(TooManyRequests):
            await second.hit_and_get(limit, "orders", "7", key=f"{prefix}:anything")
    finally:
        await first.reset()
        for client in clients:
            await client.aclose()


async def test_redis_down_fails_open() -> None:
    client = build_redis("redis://127.0.0.1:1/0", 0.2)
    limiter = RateLimiter(client, key_prefix="test:down")
    limit = parse_limit("1/minute")
    rejected = _rejections("token")
    for _ in range(3):
        await limiter.hit(limit, "token", "x")  # beyond the limit, and still let through
    assert _rejections("token") == rejected
    read = await limiter.hit_and_get(limit, "token", "x", key="test:down:entry")
    assert (read.ok, read.value) == (False, None)
    await client.aclose()


async def test_the_check_and_the_read_are_one_script_and_one_key_per_identity(
    limiter: RateLimiter, redis: Redis
) -> None:
    limit = parse_limit("300/minute")
    entry = f"test:{uuid.uuid4().hex}:entry"
    await redis.set(entry, b"cached bytes", ex=60)
    try:
        found = await limiter.hit_and_get(limit, "orders", "8", key=entry)
        missing = await limiter.hit_and_get(limit, "orders", "8", key=f"{entry}:none")
        for _ in range(50):
            await limiter.hit(limit, "orders", "8")
        identity = limiter.key(limit, "orders", "8").rsplit(":", 1)[0]
        state = [key async for key in redis.scan_iter(match=f"{identity}*")]
    finally:
        await redis.delete(entry)

    assert (found.ok, found.value) == (True, b"cached bytes")
    assert (missing.ok, missing.value) == (True, None)
    # O(1): one string whatever the number of requests (the moving window kept a sorted set
    # with one member per request).
    assert state == [limiter.key(limit, "orders", "8").encode()]
    assert await redis.type(state[0]) == b"string"
    assert 0 < await redis.pttl(state[0]) <= 60_000


async def test_after_the_burst_the_allowance_refills_at_the_sustained_rate(
    limiter: RateLimiter,
) -> None:
    limit = parse_limit("10/second")  # a burst of 10, then one every 100 ms
    for _ in range(10):
        await limiter.hit(limit, "orders", "9")
    with pytest.raises(TooManyRequests) as raised:
        await limiter.hit(limit, "orders", "9")
    assert raised.value.headers == {"Retry-After": "1"}
    await asyncio.sleep(0.25)
    await limiter.hit(limit, "orders", "9")
    await limiter.hit(limit, "orders", "9")
    with pytest.raises(TooManyRequests):
        await limiter.hit(limit, "orders", "9")


async def test_limiting_switched_off_still_reads(redis: Redis) -> None:
    limiter = RateLimiter(redis, key_prefix=f"test:{uuid.uuid4().hex}", enabled=False)
    limit = parse_limit("1/minute")
    for _ in range(3):
        await limiter.hit(limit, "orders", "1")
    read = await limiter.hit_and_get(limit, "orders", "1", key=f"test:{uuid.uuid4().hex}")
    assert (read.ok, read.value) == (True, None)


@pytest.mark.parametrize("text", ["1000000000/minute", "100000/second", "3000/second"])
async def test_a_very_high_limit_still_limits_and_reads(
    limiter: RateLimiter, redis: Redis, text: str
) -> None:
    """A sub-millisecond interval (a limit raised for a benchmark, or a generous one) keeps
    the script working: no zero expiry, no failing open, the cache read still answered."""
    limit = parse_limit(text)
    entry = f"test:{uuid.uuid4().hex}:entry"
    await redis.set(entry, b"cached", ex=60)
    try:
        for _ in range(20):
            read = await limiter.hit_and_get(limit, "orders", "high", key=entry)
            assert (read.ok, read.value) == (True, b"cached")
        # The identity's state is kept and moves on (not rounded away).
        state = await redis.get(limiter.key(limit, "orders", "high"))
        assert state is not None
        assert await redis.pttl(limiter.key(limit, "orders", "high")) >= 1
    finally:
        await redis.delete(entry)


def test_a_limit_of_zero_is_refused_when_read() -> None:
    with pytest.raises(ValueError, match="at least one"):
        parse_limit("0/minute")


async def test_a_script_redis_refuses_still_reads_the_cache(redis: Redis) -> None:
    limiter = RateLimiter(redis, key_prefix=f"test:{uuid.uuid4().hex}")
    limiter._script = redis.register_script("return redis.call('NO_SUCH_COMMAND')")
    entry = f"test:{uuid.uuid4().hex}:entry"
    await redis.set(entry, b"cached", ex=60)
    try:
        read = await limiter.hit_and_get(parse_limit("1/minute"), "orders", "x", key=entry)
        assert (read.ok, read.value) == (True, b"cached")
    finally:
        await redis.delete(entry)
