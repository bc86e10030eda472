from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from order_common.orders import OrderRead

from .conftest import User

PlaceOrder = Callable[..., Awaitable[dict[str, Any]]]

STATUSES = ["PENDING", "PAID", "SHIPPED", "CANCELED"]
# The state machine as the architecture states it, written out independently of the code.
LEGAL = {("PENDING", "PAID"), ("PENDING", "CANCELED"), ("PAID", "SHIPPED"), ("PAID", "CANCELED")}
ALLOWED_NAMES = {
    "PENDING": ["CANCELED", "PAID"],
    "PAID": ["CANCELED", "SHIPPED"],
    "SHIPPED": [],
    "CANCELED": [],
}
PATH_TO = {
    "PENDING": [],
    "PAID": ["PAID"],
    "SHIPPED": ["PAID", "SHIPPED"],
    "CANCELED": ["CANCELED"],
}


async def _events(db: AsyncEngine, order_id: str, event_type: str) -> list[dict[str, Any]]:
    async with db.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT payload FROM outbox_events WHERE event_type = :type "
                "AND payload->'data'->>'order_id' = :order_id ORDER BY created_at"
            ),
            {"type": event_type, "order_id": order_id},
        )
        return [row.payload for row in result]


@pytest.fixture
def order_in(
    client: httpx.AsyncClient, place_order: PlaceOrder
) -> Callable[[User, str], Awaitable[dict[str, Any]]]:
    async def make(user: User, status: str) -> dict[str, Any]:
        order = await place_order(user)
        for step in PATH_TO[status]:
            response = await client.patch(
                f"/orders/{order['id']}/", json={"status": step}, headers=user.headers
            )
            assert response.status_code == 200, response.text
            order = response.json()
        assert order["status"] == status
        return order

    return make


@pytest.mark.parametrize(
    ("current", "requested"),
    [pair for pair in itertools.product(STATUSES, STATUSES) if pair in LEGAL],
)
async def test_legal_move_returns_200_and_announces_the_change(
    client: httpx.AsyncClient,
    db: AsyncEngine,
    user: User,
    order_in: Callable[[User, str], Awaitable[dict[str, Any]]],
    current: str,
    requested: str,
) -> None:
    order = await order_in(user, current)

    response = await client.patch(
        f"/orders/{order['id']}/", json={"status": requested}, headers=user.headers
    )

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == requested
    assert datetime.fromisoformat(body["updated_at"]) > datetime.fromisoformat(order["updated_at"])
    assert body["created_at"] == order["created_at"]
    changes = await _events(db, order["id"], "order_status_changed")
    assert changes[-1]["data"]["from_status"] == current
    assert changes[-1]["data"]["to_status"] == requested
    assert len(changes) == len(PATH_TO[current]) + 1


@pytest.mark.parametrize(
    ("current", "requested"),
    [
        pair
        for pair in itertools.product(STATUSES, STATUSES)
        if pair not in LEGAL and pair[0] != pair[1]
    ],
)
async def test_illegal_move_returns_409_naming_the_allowed_moves(
    client: httpx.AsyncClient,
    db: AsyncEngine,
    user: User,
    order_in: Callable[[User, str], Awaitable[dict[str, Any]]],
    current: str,
    requested: str,
) -> None:
    order = await order_in(user, current)

    response = await client.patch(
        f"/orders/{order['id']}/", json={"status": requested}, headers=user.headers
    )

    assert response.status_code == 409
    detail = response.json()["detail"]
    assert current in detail
    assert requested in detail
    for allowed in ALLOWED_NAMES[current]:
        assert allowed in detail
    if not ALLOWED_NAMES[current]:
        assert "none" in detail
    after = await client.get(f"/orders/{order['id']}/", headers=user.headers)
    assert after.json() == order
    assert len(await _events(db, order["id"], "order_status_changed")) == len(PATH_TO[current])


@pytest.mark.parametrize("status", STATUSES)
async def test_setting_the_current_status_again_is_a_no_op(
    client: httpx.AsyncClient,
    db: AsyncEngine,
    user: User,
    order_in: Callable[[User, str], Awaitable[dict[str, Any]]],
    status: str,
) -> None:
    order = await order_in(user, status)

    response = await client.patch(
        f"/orders/{order['id']}/", json={"status": status}, headers=user.headers
    )

    assert response.status_code == 200
    assert response.json() == order
    assert len(await _events(db, order["id"], "order_status_changed")) == len(PATH_TO[status])


async def test_patch_refreshes_the_cache_at_once(
    client: httpx.AsyncClient,
    app: FastAPI,
    redis_client: Redis,
    user: User,
    place_order: PlaceOrder,
) -> None:
    order = await place_order(user)
    await client.get(f"/orders/{order['id']}/", headers=user.headers)  # cached as PENDING

    patched = await client.patch(
        f"/orders/{order['id']}/", json={"status": "PAID"}, headers=user.headers
    )

    cached = await app.state.cache.get_entry(uuid.UUID(order["id"]))
    assert cached is not None
    assert OrderRead.model_validate_json(cached.body).status == "PAID"
    assert cached.version == 2
    fetched = await client.get(f"/orders/{order['id']}/", headers=user.headers)
    assert fetched.json() == patched.json()
    assert fetched.json()["status"] == "PAID"


async def test_another_users_order_cannot_be_changed_and_is_not_revealed(
    client: httpx.AsyncClient, user: User, other_user: User, place_order: PlaceOrder
) -> None:
    order = await place_order(user)

    theirs = await client.patch(
        f"/orders/{order['id']}/", json={"status": "CANCELED"}, headers=other_user.headers
    )
    unknown = await client.patch(
        f"/orders/{uuid.uuid4()}/", json={"status": "CANCELED"}, headers=other_user.headers
    )

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    mine = await client.get(f"/orders/{order['id']}/", headers=user.headers)
    assert mine.json()["status"] == "PENDING"


@pytest.mark.parametrize(
    "body",
    [{"status": "LOST"}, {"status": "paid"}, {}, {"status": "PAID", "total_price": "0.00"}],
    ids=["unknown-status", "lower-case", "missing", "extra-field"],
)
async def test_invalid_status_update_returns_422(
    client: httpx.AsyncClient, user: User, place_order: PlaceOrder, body: dict[str, Any]
) -> None:
    order = await place_order(user)

    response = await client.patch(f"/orders/{order['id']}/", json=body, headers=user.headers)

    assert response.status_code == 422


async def test_concurrent_conflicting_changes_apply_one_and_refuse_the_other(
    client: httpx.AsyncClient,
    user: User,
    order_in: Callable[[User, str], Awaitable[dict[str, Any]]],
) -> None:
    # From PAID both SHIPPED and CANCELED are legal, but neither is legal after the other.
    order = await order_in(user, "PAID")

    responses = await asyncio.gather(
        *(
            client.patch(f"/orders/{order['id']}/", json={"status": s}, headers=user.headers)
            for s in ("SHIPPED", "CANCELED")
        )
    )

    assert sorted(r.status_code for r in responses) == [200, 409]
    winner = next(r.json() for r in responses if r.status_code == 200)
    fetched = await client.get(f"/orders/{order['id']}/", headers=user.headers)
    assert fetched.json() == winner
