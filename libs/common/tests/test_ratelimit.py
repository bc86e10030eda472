from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from order_common.errors import TooManyRequests
from order_common.ratelimit import RateLimiter, parse_limit

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def limiter() -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(REDIS_URL, key_prefix=f"test:{uuid.uuid4().hex}")
    yield limiter
    await limiter.reset()


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
    await limiter.hit(limit, "token", "b")
    await limiter.hit(limit, "register", "a")


async def test_two_limiters_sharing_redis_share_the_count() -> None:
    # Two replicas of a service each build their own limiter against the same Redis.
    prefix = f"test:{uuid.uuid4().hex}"
    first, second = (
        RateLimiter(REDIS_URL, key_prefix=prefix),
        RateLimiter(REDIS_URL, key_prefix=prefix),
    )
    limit = parse_limit("2/minute")
    try:
        await first.hit(limit, "orders", "7")
        await second.hit(limit, "orders", "7")
        with pytest.raises(TooManyRequests):
            await first.hit(limit, "orders", "7")
    finally:
        await first.reset()


async def test_redis_down_fails_open() -> None:
    limiter = RateLimiter("redis://127.0.0.1:1/0", key_prefix="test:down", timeout=0.2)
    limit = parse_limit("1/minute")
    for _ in range(3):
        await limiter.hit(limit, "token", "x")
