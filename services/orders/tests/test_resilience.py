from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY

from .conftest import DEAD_REDIS_URL, VALID_ORDER, User


def _cache_errors() -> float:
    total = 0.0
    for op in ("get", "put"):
        value = REGISTRY.get_sample_value(
            "orders_cache_operations_total", {"op": op, "result": "error"}
        )
        total += value or 0.0
    return total


async def test_every_endpoint_works_from_postgresql_when_redis_is_down(
    start_app: Any, user: User, caplog: pytest.LogCaptureFixture
) -> None:
    errors_before = _cache_errors()
    caplog.set_level(logging.WARNING)

    async with start_app(redis_url=DEAD_REDIS_URL) as (_, client):
        created = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]

        fetched = await client.get(f"/orders/{order_id}/", headers=user.headers)
        assert fetched.status_code == 200
        assert fetched.json() == created.json()

        patched = await client.patch(
            f"/orders/{order_id}/", json={"status": "PAID"}, headers=user.headers
        )
        assert patched.status_code == 200
        assert patched.json()["status"] == "PAID"

        refetched = await client.get(f"/orders/{order_id}/", headers=user.headers)
        assert refetched.json()["status"] == "PAID"

        listed = await client.get(f"/orders/user/{user.id}/", headers=user.headers)
        assert listed.status_code == 200
        assert [order["id"] for order in listed.json()] == [order_id]

    assert _cache_errors() > errors_before
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("order cache unavailable" in m for m in messages)
    assert any("rate limit storage unavailable" in m for m in messages)


async def test_readyz_is_503_naming_redis_when_redis_is_down(start_app: Any) -> None:
    async with start_app(redis_url=DEAD_REDIS_URL) as (_, client):
        response = await client.get("/readyz")

    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["redis"].startswith("failed")


async def test_rate_limit_per_user_returns_429_with_retry_after(
    start_app: Any, user: User, other_user: User
) -> None:
    async with start_app(rate_limit_orders="3/minute") as (_, client):
        statuses = [
            (await client.get(f"/orders/user/{user.id}/", headers=user.headers)).status_code
            for _ in range(3)
        ]
        limited = await client.get(f"/orders/user/{user.id}/", headers=user.headers)
        someone_else = await client.get(
            f"/orders/user/{other_user.id}/", headers=other_user.headers
        )

    assert statuses == [200, 200, 200]
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "rate limit" in limited.json()["detail"]
    assert someone_else.status_code == 200


async def test_rate_limit_can_be_switched_off(start_app: Any, user: User) -> None:
    async with start_app(rate_limit_orders="1/minute", rate_limit_enabled=False) as (_, client):
        statuses = {
            (await client.get(f"/orders/user/{user.id}/", headers=user.headers)).status_code
            for _ in range(3)
        }

    assert statuses == {200}
