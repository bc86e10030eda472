from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from .conftest import VALID_ORDER, User

PlaceOrder = Callable[..., Awaitable[dict[str, Any]]]


@pytest.mark.parametrize("slash", ["", "/"], ids=["without-slash", "with-slash"])
async def test_every_endpoint_answers_with_and_without_trailing_slash(
    client: httpx.AsyncClient, user: User, place_order: PlaceOrder, slash: str
) -> None:
    order = await place_order(user)
    calls = [
        ("POST", "/orders", VALID_ORDER, 201),
        ("GET", f"/orders/{order['id']}", None, 200),
        ("PATCH", f"/orders/{order['id']}", {"status": "PAID"}, 200),
        ("GET", f"/orders/user/{user.id}", None, 200),
    ]
    for method, path, body, expected in calls:
        response = await client.request(
            method, path + slash, json=body, headers=user.headers, follow_redirects=False
        )
        assert response.status_code == expected, (method, path + slash, response.text)


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
async def test_probes_and_metrics_need_no_token(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)

    assert response.status_code == 200


async def test_readyz_reports_database_and_redis(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_metrics_expose_cache_operations(
    client: httpx.AsyncClient, user: User, place_order: PlaceOrder
) -> None:
    order = await place_order(user)
    await client.get(f"/orders/{order['id']}", headers=user.headers)

    text = (await client.get("/metrics")).text

    assert 'orders_cache_operations_total{op="get",result="hit"}' in text
    assert "orders_created_total" in text


async def test_unknown_path_is_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/nope")

    assert response.status_code == 404
    assert "detail" in response.json()


async def test_request_id_is_kept_and_returned(client: httpx.AsyncClient, user: User) -> None:
    response = await client.get(
        f"/orders/{uuid.uuid4()}", headers={**user.headers, "X-Request-ID": "abc-123"}
    )

    assert response.headers["X-Request-ID"] == "abc-123"


async def test_openapi_documents_each_route_once(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]

    assert set(paths) >= {"/orders/", "/orders/{order_id}/", "/orders/user/{user_id}/"}
    assert "/orders" not in paths
