from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest


@pytest.mark.parametrize("path", ["/register", "/register/"])
async def test_register_answers_with_and_without_trailing_slash_without_redirect(
    client: httpx.AsyncClient, new_email: Callable[[], str], path: str
) -> None:
    response = await client.post(path, json={"email": new_email(), "password": "secret1"})

    assert response.status_code == 201


@pytest.mark.parametrize("path", ["/token", "/token/"])
async def test_token_answers_with_and_without_trailing_slash_without_redirect(
    client: httpx.AsyncClient, new_email: Callable[[], str], path: str
) -> None:
    email = new_email()
    await client.post("/register/", json={"email": email, "password": "secret1"})

    response = await client.post(path, data={"username": email, "password": "secret1"})

    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/.well-known/jwks.json", "/.well-known/jwks.json/"])
async def test_jwks_answers_with_and_without_trailing_slash_without_redirect(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)

    assert response.status_code == 200


async def test_cors_preflight_from_an_allowed_origin_is_answered(
    client: httpx.AsyncClient,
) -> None:
    response = await client.options(
        "/token/",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"


async def test_responses_carry_the_gateway_request_id(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})

    assert response.headers["x-request-id"] == "abc-123"
