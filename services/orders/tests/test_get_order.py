from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from redis import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from order_common.orders import OrderRead, OrderStatus

from .conftest import User

PlaceOrder = Callable[..., Awaitable[dict[str, Any]]]


def _cache_count(op: str, result: str) -> float:
    value = REGISTRY.get_sample_value("orders_cache_operations_total", {"op": op, "result": result})
    return value or 0.0


async def test_owner_reads_the_order(
    client: httpx.AsyncClient, user: User, place_order: PlaceOrder
) -> None:
    created = await place_order(user)

    response = await client.get(f"/orders/{created['id']}/", headers=user.headers)

    assert response.status_code == 200
    assert response.json() == created


async def test_unknown_order_returns_404(client: httpx.AsyncClient, user: User) -> None:
    response = await client.get(f"/orders/{uuid.uuid4()}/", headers=user.headers)

    assert response.status_code == 404
    assert response.json() == {"detail": "order not found"}


async def test_malformed_order_id_returns_422(client: httpx.AsyncClient, user: User) -> None:
    response = await client.get("/orders/not-a-uuid/", headers=user.headers)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "order_id"]


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "not-cached"])
async def test_another_users_order_answers_like_an_unknown_one(
    client: httpx.AsyncClient,
    app: FastAPI,
    redis_client: Redis,
    user: User,
    other_user: User,
    place_order: PlaceOrder,
    cached: bool,
) -> None:
    created = await place_order(user)
    if not cached:
        redis_client.delete(app.state.cache.key(uuid.UUID(created["id"])))

    theirs = await client.get(f"/orders/{created['id']}/", headers=other_user.headers)
    unknown = await client.get(f"/orders/{uuid.uuid4()}/", headers=other_user.headers)

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()


async def test_get_fills_the_cache_and_the_repeat_is_a_cache_hit(
    client: httpx.AsyncClient,
    app: FastAPI,
    redis_client: Redis,
    user: User,
    place_order: PlaceOrder,
) -> None:
    created = await place_order(user)
    key = app.state.cache.key(uuid.UUID(created["id"]))
    redis_client.delete(key)

    misses, hits = _cache_count("get", "miss"), _cache_count("get", "hit")
    first = await client.get(f"/orders/{created['id']}/", headers=user.headers)
    assert _cache_count("get", "miss") == misses + 1
    assert redis_client.exists(key)

    second = await client.get(f"/orders/{created['id']}", headers=user.headers)
    assert _cache_count("get", "hit") == hits + 1
    assert first.json() == second.json() == created
    assert await app.state.cache.get(uuid.UUID(created["id"])) == OrderRead(**created)


async def test_repeat_get_is_served_from_redis_not_the_database(
    client: httpx.AsyncClient, user: User, place_order: PlaceOrder, db: AsyncEngine
) -> None:
    created = await place_order(user)
    # A change made behind the service's back stays invisible while the cache entry lives...
    async with db.begin() as conn:
        await conn.execute(
            text("UPDATE orders SET processed_at = now() WHERE id = :id"), {"id": created["id"]}
        )

    cached = await client.get(f"/orders/{created['id']}/", headers=user.headers)
    assert cached.json()["processed_at"] is None

    # ...until a change through the service refreshes the entry from the row.
    patched = await client.patch(
        f"/orders/{created['id']}/", json={"status": "PAID"}, headers=user.headers
    )
    refreshed = await client.get(f"/orders/{created['id']}/", headers=user.headers)
    assert patched.json()["processed_at"] is not None
    assert refreshed.json() == patched.json()


async def test_unreadable_cache_entry_falls_back_to_the_database(
    client: httpx.AsyncClient,
    app: FastAPI,
    redis_client: Redis,
    user: User,
    place_order: PlaceOrder,
) -> None:
    created = await place_order(user)
    key = app.state.cache.key(uuid.UUID(created["id"]))
    redis_client.set(key, b"{not json")

    response = await client.get(f"/orders/{created['id']}/", headers=user.headers)

    assert response.status_code == 200
    assert response.json() == created
    repaired = await app.state.cache.get(uuid.UUID(created["id"]))
    assert repaired is not None
    assert repaired.id == uuid.UUID(created["id"])


async def test_cache_keeps_the_newest_version_when_writes_arrive_out_of_order(
    app: FastAPI, user: User, place_order: PlaceOrder
) -> None:
    created = OrderRead.model_validate(await place_order(user))
    newer = created.model_copy(update={"status": OrderStatus.PAID})
    cache = app.state.cache

    await cache.put(newer, 2)
    await cache.put(created, 1)  # a slow reader's fill from before the change

    assert await cache.get(created.id) == newer
