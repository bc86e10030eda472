from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis import Redis
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from order_common.events import parse_envelope
from order_common.orders import OrderCreate
from orders_service import service
from orders_service.uow import OrdersUnitOfWork

from .conftest import VALID_ORDER, User

PlaceOrder = Callable[..., Awaitable[dict[str, Any]]]


def _order(items: list[dict[str, Any]], total: Any) -> dict[str, Any]:
    return {"items": items, "total_price": total}


def _item(name: Any = "Pen", quantity: Any = 1, price: Any = "1.00") -> dict[str, Any]:
    return {"name": name, "quantity": quantity, "price": price}


async def _outbox_rows(db: AsyncEngine, order_id: str) -> list[dict[str, Any]]:
    async with db.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT id, event_type, payload, headers, published_at, attempts "
                "FROM outbox_events WHERE payload->'data'->>'order_id' = :order_id "
                "ORDER BY created_at"
            ),
            {"order_id": order_id},
        )
        return [dict(row) for row in result.mappings()]


async def test_create_returns_201_with_the_order(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {
        "id",
        "user_id",
        "items",
        "total_price",
        "status",
        "created_at",
        "updated_at",
        "processed_at",
    }
    uuid.UUID(body["id"])
    assert body["user_id"] == user.id
    assert body["status"] == "PENDING"
    assert body["items"] == VALID_ORDER["items"]
    assert body["processed_at"] is None
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None
    assert body["created_at"] == body["updated_at"]


async def test_money_round_trips_exactly_as_strings(
    client: httpx.AsyncClient, user: User, place_order: PlaceOrder
) -> None:
    created = await place_order(user)
    assert created["total_price"] == "451.00"
    assert [item["price"] for item in created["items"]] == ["400.00", "25.50"]

    fetched = (await client.get(f"/orders/{created['id']}/", headers=user.headers)).json()
    assert fetched["total_price"] == "451.00"


async def test_numbers_are_accepted_and_normalised_to_two_places(
    place_order: PlaceOrder, user: User
) -> None:
    created = await place_order(user, _order([_item(quantity=3, price=2)], 6))
    assert created["total_price"] == "6.00"
    assert created["items"][0]["price"] == "2.00"


async def test_largest_total_that_fits_numeric_10_2_is_accepted(
    place_order: PlaceOrder, user: User, db: AsyncEngine
) -> None:
    created = await place_order(user, _order([_item(price="99999999.99")], "99999999.99"))

    async with db.connect() as conn:
        stored = await conn.scalar(
            text("SELECT total_price FROM orders WHERE id = :id"), {"id": created["id"]}
        )
    assert stored == Decimal("99999999.99")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(_order([], "0.00"), "items", id="no-items"),
        pytest.param(_order([_item()] * 101, "101.00"), "items", id="101-items"),
        pytest.param(_order([_item(name="")], "1.00"), "name", id="empty-name"),
        pytest.param(_order([_item(name="   ")], "1.00"), "name", id="blank-name"),
        pytest.param(_order([_item(name="x" * 201)], "1.00"), "name", id="name-201-chars"),
        pytest.param(_order([_item(quantity=0)], "0.00"), "quantity", id="quantity-0"),
        pytest.param(_order([_item(quantity=10001)], "10001.00"), "quantity", id="quantity-10001"),
        pytest.param(_order([_item(quantity=1.5)], "1.50"), "quantity", id="quantity-fraction"),
        pytest.param(_order([_item(price="-1.00")], "-1.00"), "price", id="negative-price"),
        pytest.param(_order([_item(price="1.005")], "1.01"), "price", id="price-3-decimals"),
        pytest.param(_order([_item(price="NaN")], "0.00"), "price", id="price-nan"),
        pytest.param(_order([_item(price="abc")], "1.00"), "price", id="price-not-a-number"),
        pytest.param(_order([_item(price="1.00")], "2.00"), "total_price", id="total-mismatch"),
        pytest.param(_order([_item(price="1.00")], "1.001"), "total_price", id="total-3-decimals"),
        pytest.param(
            _order([_item(quantity=2, price="99999999.99")], "199999999.98"),
            "total_price",
            id="total-over-numeric-10-2",
        ),
        pytest.param(
            _order([_item(quantity=10000, price="10000.00")], "1.00"),
            "total_price",
            id="items-add-up-over-numeric-10-2",
        ),
        pytest.param({"items": [_item()]}, "total_price", id="total-missing"),
        pytest.param({**_order([_item()], "1.00"), "status": "PAID"}, "status", id="extra-field"),
        pytest.param(_order([{**_item(), "sku": 1}], "1.00"), "sku", id="extra-item-field"),
    ],
)
async def test_invalid_order_returns_422_naming_the_field(
    client: httpx.AsyncClient, user: User, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/orders/", json=body, headers=user.headers)

    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(
        field in [str(part) for part in error["loc"]] or field in error["msg"] for error in errors
    ), errors


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b'{"items": [', "application/json", id="invalid-json"),
        pytest.param(b"[1, 2]", "application/json", id="array"),
        pytest.param(b'"order"', "application/json", id="string"),
        pytest.param(b"null", "application/json", id="null"),
        pytest.param(b"", "application/json", id="empty"),
        pytest.param(b"items=1", "application/x-www-form-urlencoded", id="form"),
    ],
)
async def test_malformed_body_returns_422(
    client: httpx.AsyncClient, user: User, content: bytes, content_type: str
) -> None:
    response = await client.post(
        "/orders/", content=content, headers={**user.headers, "Content-Type": content_type}
    )

    assert response.status_code == 422
    assert "detail" in response.json()


async def test_create_writes_a_new_order_outbox_event(
    place_order: PlaceOrder, user: User, db: AsyncEngine
) -> None:
    created = await place_order(user)

    rows = await _outbox_rows(db, created["id"])
    assert len(rows) == 1
    row = rows[0]
    assert row["event_type"] == "new_order"
    assert row["published_at"] is None
    assert row["attempts"] == 0
    assert row["headers"] == {}
    event = parse_envelope(json.dumps(row["payload"]))
    assert event.event_id == row["id"]
    assert event.version == 1
    assert str(event.data.order_id) == created["id"]
    assert event.data.user_id == user.id
    assert event.data.status == "PENDING"
    assert row["payload"]["data"]["total_price"] == "451.00"
    assert row["payload"]["data"]["items"] == VALID_ORDER["items"]


async def test_failed_order_insert_leaves_no_outbox_event(
    app: FastAPI,
    place_order: PlaceOrder,
    user: User,
    other_user: User,
    db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Validation keeps bad input away from the database, so make the INSERT itself fail: the
    # new order gets the id of an existing one and violates the primary key.
    taken = uuid.UUID((await place_order(other_user))["id"])
    monkeypatch.setattr(service.uuid, "uuid4", lambda: taken)
    data = OrderCreate.model_validate(VALID_ORDER)

    with pytest.raises(IntegrityError):
        await service.create_order(
            OrdersUnitOfWork(app.state.session_factory), app.state.cache, user_id=user.id, data=data
        )

    async with db.connect() as conn:
        orders = await conn.scalar(
            text("SELECT count(*) FROM orders WHERE user_id = :u"), {"u": user.id}
        )
        events = await conn.scalar(
            text("SELECT count(*) FROM outbox_events WHERE payload->'data'->>'user_id' = :u"),
            {"u": str(user.id)},
        )
    assert (orders, events) == (0, 0)


async def test_created_order_is_cached(
    app: FastAPI, place_order: PlaceOrder, user: User, redis_client: Redis
) -> None:
    created = await place_order(user)

    cached = await app.state.cache.get_entry(uuid.UUID(created["id"]))
    assert cached is not None
    assert json.loads(cached.body) == created
    assert (cached.version, cached.user_id) == (1, user.id)
    assert 0 < redis_client.ttl(app.state.cache.key(uuid.UUID(created["id"]))) <= 300


async def test_user_id_in_the_body_is_refused(client: httpx.AsyncClient, user: User) -> None:
    body = copy.deepcopy(VALID_ORDER) | {"user_id": user.id + 1}
    response = await client.post("/orders/", json=body, headers=user.headers)
    assert response.status_code == 422
