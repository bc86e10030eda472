"""Idempotency-Key on POST /orders/: a retry returns the first order and creates none, also
when the requests race; another body under the same key is a 422; keys are per user and
expire."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from orders_service import service
from orders_service.uow import OrdersUnitOfWork

from .conftest import VALID_ORDER, AppClient, User

OTHER_ORDER: dict[str, Any] = {
    "items": [{"name": "Keyboard", "quantity": 1, "price": "80.00"}],
    "total_price": "80.00",
}


def _post(client: httpx.AsyncClient, user: User, key: str | bytes, body: dict[str, Any]) -> Any:
    return client.post("/orders/", json=body, headers={**user.headers, "Idempotency-Key": key})


async def _count(db: AsyncEngine, sql: str, **params: Any) -> int:
    async with db.connect() as conn:
        return int(await conn.scalar(text(sql), params) or 0)


async def _orders_of(db: AsyncEngine, user: User) -> int:
    return await _count(db, "SELECT count(*) FROM orders WHERE user_id = :u", u=user.id)


async def _events_of(db: AsyncEngine, user: User) -> int:
    return await _count(
        db,
        "SELECT count(*) FROM outbox_events WHERE payload->'data'->>'user_id' = :u",
        u=str(user.id),
    )


async def test_a_retry_with_the_same_key_returns_the_first_order_and_creates_none(
    client: httpx.AsyncClient, user: User, db: AsyncEngine
) -> None:
    key = str(uuid.uuid4())

    first = await _post(client, user, key, VALID_ORDER)
    retry = await _post(client, user, key, VALID_ORDER)

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["idempotent-replayed"] == "true"
    assert await _orders_of(db, user) == 1
    assert await _events_of(db, user) == 1  # announced once: processed once


async def test_the_same_body_in_another_spelling_is_the_same_request(
    client: httpx.AsyncClient, user: User, db: AsyncEngine
) -> None:
    key = str(uuid.uuid4())
    respelled = {
        "total_price": "451.0",
        "items": [
            {"price": "400", "name": "Laptop", "quantity": 1},
            {"quantity": 2, "name": "Mouse", "price": "25.50"},
        ],
    }

    first = await _post(client, user, key, VALID_ORDER)
    retry = await _post(client, user, key, respelled)

    assert retry.status_code == 201
    assert retry.json()["id"] == first.json()["id"]
    assert await _orders_of(db, user) == 1


async def test_twenty_parallel_requests_with_one_key_make_one_order(
    client: httpx.AsyncClient, user: User, db: AsyncEngine
) -> None:
    key = str(uuid.uuid4())

    responses = await asyncio.gather(*(_post(client, user, key, VALID_ORDER) for _ in range(20)))

    assert [r.status_code for r in responses] == [201] * 20
    assert len({r.json()["id"] for r in responses}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 19
    assert await _orders_of(db, user) == 1
    assert await _events_of(db, user) == 1


async def test_the_same_key_with_another_body_is_a_422_that_says_so(
    client: httpx.AsyncClient, user: User, db: AsyncEngine
) -> None:
    key = str(uuid.uuid4())
    await _post(client, user, key, VALID_ORDER)

    response = await _post(client, user, key, OTHER_ORDER)

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["header", "Idempotency-Key"]
    assert error["type"] == "idempotency_key_reused"
    assert "different request body" in error["msg"]
    assert await _orders_of(db, user) == 1


async def test_keys_of_different_users_never_collide(
    client: httpx.AsyncClient, user: User, other_user: User, db: AsyncEngine
) -> None:
    key = "order-1"

    mine = await _post(client, user, key, VALID_ORDER)
    theirs = await _post(client, other_user, key, OTHER_ORDER)

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]
    assert theirs.json()["user_id"] == other_user.id
    assert "idempotent-replayed" not in theirs.headers
    assert (await _orders_of(db, user), await _orders_of(db, other_user)) == (1, 1)


async def test_without_a_key_every_request_is_a_new_order(
    client: httpx.AsyncClient, user: User, db: AsyncEngine
) -> None:
    first = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
    second = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)

    assert first.json()["id"] != second.json()["id"]
    assert await _orders_of(db, user) == 2


async def test_an_expired_key_makes_a_new_order_and_expired_keys_are_cleaned_up(
    start_app: AppClient, new_user: Callable[[], User], db: AsyncEngine
) -> None:
    user = new_user()
    async with start_app(idempotency_key_ttl_seconds=1) as (app, client):
        key = str(uuid.uuid4())
        first = await _post(client, user, key, VALID_ORDER)
        await asyncio.sleep(1.1)

        after_expiry = await _post(client, user, key, OTHER_ORDER)

        assert after_expiry.status_code == 201
        assert after_expiry.json()["id"] != first.json()["id"]
        assert "idempotent-replayed" not in after_expiry.headers
        uow = OrdersUnitOfWork(app.state.session_factory)
        later = datetime.now(UTC) + timedelta(seconds=2)
        assert await service.purge_expired_idempotency_keys(uow, now=later) >= 1
    assert (
        await _count(db, "SELECT count(*) FROM idempotency_keys WHERE user_id = :u", u=user.id) == 0
    )


async def test_a_key_that_is_not_visible_ascii_or_too_long_is_a_422(
    client: httpx.AsyncClient, user: User, app: FastAPI
) -> None:
    bad_keys: list[str | bytes] = ["x" * 256, "caf\u00e9".encode(), "with space"]
    for bad in bad_keys:
        response = await _post(client, user, bad, VALID_ORDER)
        assert response.status_code == 422, bad
        assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_the_header_is_documented_in_the_openapi(app: FastAPI) -> None:
    operation = app.openapi()["paths"]["/orders/"]["post"]
    [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]

    assert header["in"] == "header"
    assert header["required"] is False
    assert "24 hours" in header["description"]
