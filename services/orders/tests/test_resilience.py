from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from order_common.logging import OUTAGE_WARNINGS

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
    OUTAGE_WARNINGS.reset()  # another test's outage may have said them a moment ago

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


async def _drop_every_connection(db: AsyncEngine) -> int:
    """What a database restart or failover does to the pool: every backend of the test
    database is terminated (the pooled connections die without the pool knowing)."""
    async with db.connect() as connection:
        result = await connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        return int(result.scalar_one())


async def test_a_request_after_the_database_dropped_its_connections_still_succeeds(
    start_app: Any, user: User, db: AsyncEngine
) -> None:
    async with start_app() as (_, client):
        created = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        assert created.status_code == 201, created.text
        order_id = created.json()["id"]
        retries = REGISTRY.get_sample_value("db_reconnect_retries_total") or 0.0

        assert await _drop_every_connection(db) >= 1
        listed = await client.get(f"/orders/user/{user.id}/", headers=user.headers)
        assert listed.status_code == 200, listed.text
        assert order_id in [order["id"] for order in listed.json()]
        assert REGISTRY.get_sample_value("db_reconnect_retries_total") == retries + 1

        await _drop_every_connection(db)
        again = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        assert again.status_code == 201, again.text

        await _drop_every_connection(db)
        patched = await client.patch(
            f"/orders/{order_id}/", json={"status": "PAID"}, headers=user.headers
        )
        assert patched.status_code == 200, patched.text

    async with db.connect() as connection:
        orders = await connection.execute(
            text("SELECT count(*) FROM orders WHERE user_id = :user"), {"user": user.id}
        )
        assert orders.scalar_one() == 2  # the retried POST created one order, not two
