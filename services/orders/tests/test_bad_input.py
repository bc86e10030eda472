"""Bad input gets a 4xx with a readable message, never a 5xx, and never a stored row."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from .conftest import VALID_ORDER, User


def _order_with(**item: Any) -> dict[str, Any]:
    base = {"name": "Laptop", "quantity": 1, "price": "400.00", **item}
    return {"items": [base], "total_price": "400.00"}


def _raw(body: dict[str, Any], old: str, new: str) -> bytes:
    return json.dumps(body).replace(old, new, 1).encode()


RAW_BODIES: dict[str, bytes] = {
    "nan-price": _raw(VALID_ORDER, '"400.00"', "NaN"),
    "infinity-price": _raw(VALID_ORDER, '"400.00"', "Infinity"),
    "minus-infinity-total": _raw(VALID_ORDER, '"451.00"', "-Infinity"),
    "1e400-quantity": _raw(VALID_ORDER, '"quantity": 1', '"quantity": 1e400'),
    "nan-quantity": _raw(VALID_ORDER, '"quantity": 1', '"quantity": NaN'),
    "nul-in-name": json.dumps(_order_with(name="Lap\u0000top")).encode(),
    "lone-surrogate-in-name": _raw(_order_with(name="LaptopX"), "X", "\\ud800"),
    "invalid-utf8": json.dumps(_order_with(name="Laptop"))
    .encode()
    .replace(b"Laptop", b"Lap\xfftop"),
    "huge-name": json.dumps(_order_with(name="x" * 10_000)).encode(),
    "beyond-int64-quantity": _raw(
        VALID_ORDER, '"quantity": 1', '"quantity": 99999999999999999999999'
    ),
    "minus-zero-price": json.dumps(
        {"items": [{"name": "A", "quantity": 1, "price": "-0.00"}], "total_price": "0.00"}
    ).encode(),
    "three-decimals": json.dumps(_order_with(price="400.001")).encode(),
    "deeply-nested": b'{"items": ' + b"[" * 5000 + b"]" * 5000 + b', "total_price": "1.00"}',
    "not-json": b"{nope",
    "empty": b"",
    "json-array": b"[]",
    "form-body": b"items=1&total_price=1",
}


@pytest.mark.parametrize("name", list(RAW_BODIES))
async def test_bad_order_body_is_4xx_with_a_message(
    client: httpx.AsyncClient, user: User, name: str
) -> None:
    content_type = (
        "application/x-www-form-urlencoded" if name == "form-body" else "application/json"
    )
    response = await client.post(
        "/orders/",
        content=RAW_BODIES[name],
        headers={**user.headers, "Content-Type": content_type},
    )

    assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
    assert response.json()["detail"], response.text
    listed = await client.get(f"/orders/user/{user.id}/", headers=user.headers)
    assert listed.json() == [], "a refused order must not be stored"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_non_finite_number_is_named_in_the_422(
    client: httpx.AsyncClient, user: User, literal: str
) -> None:
    response = await client.post(
        "/orders/",
        content=_raw(VALID_ORDER, '"400.00"', literal),
        headers={**user.headers, "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "items", 0, "price"]
    assert "finite" in error["msg"]


async def test_nul_in_a_name_is_refused_at_the_field(client: httpx.AsyncClient, user: User) -> None:
    response = await client.post(
        "/orders/", json=_order_with(name="Lap\u0000top"), headers=user.headers
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "items", 0, "name"]


@pytest.mark.parametrize("price", ["-0.00", "-0", "1e2", "+1.00", " 1.00", "1.005", "0x10"])
async def test_price_outside_the_documented_pattern_is_refused(
    client: httpx.AsyncClient, user: User, price: str
) -> None:
    body = {"items": [{"name": "A", "quantity": 1, "price": price}], "total_price": price}

    response = await client.post("/orders/", json=body, headers=user.headers)

    assert response.status_code == 422, response.text


async def test_price_as_a_json_number_with_two_places_is_accepted(
    client: httpx.AsyncClient, user: User
) -> None:
    body = {"items": [{"name": "A", "quantity": 2, "price": 25.5}], "total_price": 51}

    response = await client.post("/orders/", json=body, headers=user.headers)

    assert response.status_code == 201, response.text
    assert response.json()["total_price"] == "51.00"


async def test_a_body_over_the_limit_is_413_from_the_service_itself(
    client: httpx.AsyncClient, user: User
) -> None:
    big = json.dumps(_order_with(name="x" * (2 * 1024 * 1024))).encode()

    declared = await client.post(
        "/orders/", content=big, headers={**user.headers, "Content-Type": "application/json"}
    )

    async def chunks():  # no Content-Length: the service counts as it reads
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    streamed = await client.post(
        "/orders/", content=chunks(), headers={**user.headers, "Content-Type": "application/json"}
    )

    for response in (declared, streamed):
        assert response.status_code == 413
        assert response.json() == {"detail": "request body too large: the limit is 1 MiB"}


@pytest.mark.parametrize(
    "path", ["/orders/user/99999999999999999999/", "/orders/user/-99999999999999999999/"]
)
async def test_a_user_id_beyond_int64_is_4xx(
    client: httpx.AsyncClient, user: User, path: str
) -> None:
    response = await client.get(path, headers=user.headers)

    assert 400 <= response.status_code < 500, response.text


@pytest.mark.parametrize("order_id", ["nope", "1234", "0b7e4c1e-5f2a-4c8e-9d3b-2a6f1e8c7d4", "%00"])
async def test_a_malformed_order_id_is_422(
    client: httpx.AsyncClient, user: User, order_id: str
) -> None:
    response = await client.get(f"/orders/{order_id}/", headers=user.headers)

    assert response.status_code == 422, response.text


@pytest.mark.parametrize("body", [b"\xff\xfe{}", b'{"items": "\xc3\x28"}', b"D\x8el\x9d"])
async def test_a_body_that_is_not_utf8_is_a_422_like_bad_json(
    client: httpx.AsyncClient, user: User, body: bytes
) -> None:
    response = await client.post(
        "/orders/", content=body, headers={**user.headers, "Content-Type": "application/json"}
    )

    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "json_invalid"
