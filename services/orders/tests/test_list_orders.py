from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .conftest import User

PlaceOrder = Callable[..., Awaitable[dict[str, Any]]]
NEXT = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


def _next_url(response: httpx.Response) -> str | None:
    link = response.headers.get("Link")
    if link is None:
        return None
    match = NEXT.match(link)
    assert match, link
    return match["url"]


async def _walk(client: httpx.AsyncClient, url: str, user: User) -> list[list[dict[str, Any]]]:
    pages = []
    next_url: str | None = url
    while next_url is not None:
        response = await client.get(next_url, headers=user.headers)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        next_url = _next_url(response)
        assert len(pages) < 50
    return pages


async def test_list_returns_the_callers_orders_newest_first(
    client: httpx.AsyncClient, user: User, other_user: User, place_order: PlaceOrder
) -> None:
    created = [await place_order(user) for _ in range(3)]
    await place_order(other_user)

    response = await client.get(f"/orders/user/{user.id}/", headers=user.headers)

    assert response.status_code == 200
    assert response.json() == created[::-1]
    assert "Link" not in response.headers


async def test_list_of_a_user_without_orders_is_empty(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await client.get(f"/orders/user/{user.id}/", headers=user.headers)

    assert response.status_code == 200
    assert response.json() == []


async def test_pages_follow_the_link_header_newest_first_without_gaps_or_repeats(
    client: httpx.AsyncClient, user: User, place_order: PlaceOrder
) -> None:
    created = [await place_order(user) for _ in range(5)]

    first = await client.get(f"/orders/user/{user.id}/?limit=2", headers=user.headers)
    assert _next_url(first) is not None
    assert str(_next_url(first)).startswith(f"/orders/user/{user.id}/?limit=2&cursor=")

    pages = await _walk(client, f"/orders/user/{user.id}/?limit=2", user)

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [order for page in pages for order in page] == created[::-1]


async def test_no_link_when_the_last_page_is_exactly_full(
    client: httpx.AsyncClient, user: User, place_order: PlaceOrder
) -> None:
    for _ in range(4):
        await place_order(user)

    pages = await _walk(client, f"/orders/user/{user.id}?limit=2", user)

    assert [len(page) for page in pages] == [2, 2]


async def test_pagination_is_stable_when_timestamps_tie(
    client: httpx.AsyncClient, user: User, db: AsyncEngine
) -> None:
    same_time = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    ids = [uuid.uuid4() for _ in range(3)]
    async with db.begin() as conn:
        for order_id in ids:
            await conn.execute(
                text(
                    "INSERT INTO orders (id, user_id, items, total_price, status, created_at, "
                    "updated_at) VALUES (:id, :user_id, "
                    """'[{"name": "Pen", "quantity": 1, "price": "1.00"}]', 1.00, """
                    "'PENDING', :at, :at)"
                ),
                {"id": order_id, "user_id": user.id, "at": same_time},
            )

    pages = await _walk(client, f"/orders/user/{user.id}/?limit=1", user)

    assert [page[0]["id"] for page in pages] == [str(i) for i in sorted(ids, reverse=True)]


async def test_default_page_size_comes_from_settings(
    start_app: Any, user: User, place_order: PlaceOrder
) -> None:
    for _ in range(3):
        await place_order(user)

    async with start_app(list_default_limit=2) as (_, client):
        response = await client.get(f"/orders/user/{user.id}/", headers=user.headers)

    assert len(response.json()) == 2
    assert str(_next_url(response)).startswith(f"/orders/user/{user.id}/?limit=2&cursor=")


async def test_listing_another_users_orders_is_forbidden(
    client: httpx.AsyncClient, user: User, other_user: User, place_order: PlaceOrder
) -> None:
    await place_order(other_user)

    response = await client.get(f"/orders/user/{other_user.id}/", headers=user.headers)

    assert response.status_code == 403
    assert "detail" in response.json()


@pytest.mark.parametrize("limit", ["0", "-1", "201", "abc", "1.5"])
async def test_limit_outside_1_to_200_returns_422(
    client: httpx.AsyncClient, user: User, limit: str
) -> None:
    response = await client.get(f"/orders/user/{user.id}/?limit={limit}", headers=user.headers)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]


async def test_limit_of_200_is_accepted(client: httpx.AsyncClient, user: User) -> None:
    response = await client.get(f"/orders/user/{user.id}/?limit=200", headers=user.headers)

    assert response.status_code == 200


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "bm90LWEtY3Vyc29y", "MTIzOnh5eg", "", "x" * 300],
    ids=["garbage", "base64-of-text", "bad-order-id", "empty", "too-long"],
)
async def test_malformed_cursor_returns_422(
    client: httpx.AsyncClient, user: User, cursor: str
) -> None:
    response = await client.get(
        f"/orders/user/{user.id}/", params={"cursor": cursor}, headers=user.headers
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "cursor"]


async def test_user_id_that_is_not_a_number_returns_422(
    client: httpx.AsyncClient, user: User
) -> None:
    response = await client.get("/orders/user/me/", headers=user.headers)

    assert response.status_code == 422


@pytest.mark.parametrize(
    "cursor", ["0-" + "0" * 32, "99999999999999999-" + "f" * 32], ids=["epoch", "far-future"]
)
async def test_every_cursor_the_schema_allows_is_accepted(
    client: httpx.AsyncClient, user: User, cursor: str
) -> None:
    response = await client.get(
        f"/orders/user/{user.id}/", params={"cursor": cursor}, headers=user.headers
    )

    assert response.status_code == 200, response.text
