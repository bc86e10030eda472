from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi import FastAPI

from auth_service.settings import Settings

from .conftest import OpenClient, StartApp

CLOSED_PORT_REDIS_URL = "redis://127.0.0.1:1/0"


def assert_rate_limited(response: httpx.Response, window_seconds: int = 60) -> None:
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= window_seconds
    assert isinstance(response.json()["detail"], str)


async def login(client: httpx.AsyncClient, username: str) -> httpx.Response:
    return await client.post("/token/", data={"username": username, "password": "wrong-pw"})


async def test_token_per_ip_request_ceiling_answers_429_with_retry_after(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(make_settings(rate_limit_token_ip="2/minute"))
    client = await open_client(app, ip="198.51.100.1")

    first, second, third = [await login(client, new_email()) for _ in range(3)]

    assert (first.status_code, second.status_code) == (401, 401)
    assert_rate_limited(third)
    other_ip = await open_client(app, ip="198.51.100.2")
    assert (await login(other_ip, new_email())).status_code == 401


async def test_register_per_ip_limit_answers_429_with_retry_after(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app = await start_app(make_settings(rate_limit_register="2/minute"))
    client = await open_client(app, ip="198.51.100.21")

    responses = [
        await client.post("/register/", json={"email": new_email(), "password": "secret1"})
        for _ in range(3)
    ]

    assert [r.status_code for r in responses[:2]] == [201, 201]
    assert_rate_limited(responses[2])
    other_ip = await open_client(app, ip="198.51.100.22")
    response = await other_ip.post("/register/", json={"email": new_email(), "password": "secret1"})
    assert response.status_code == 201


async def test_rate_limits_count_only_within_their_own_key_prefix(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    # Two runs sharing one Redis must not spend each other's budget.
    first = await start_app(make_settings(rate_limit_register="1/minute"))
    second = await start_app(
        make_settings(
            rate_limit_register="1/minute",
            redis_key_prefix=f"{first.state.settings.redis_key_prefix}-other",
        )
    )
    body = {"email": new_email(), "password": "secret1"}
    assert (await (await open_client(first)).post("/register/", json=body)).status_code == 201

    body = {"email": new_email(), "password": "secret1"}
    assert (await (await open_client(second)).post("/register/", json=body)).status_code == 201


async def test_requests_still_succeed_when_redis_is_down(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    app: FastAPI = await start_app(
        make_settings(
            redis_url=CLOSED_PORT_REDIS_URL,
            rate_limit_register="1/minute",
            rate_limit_token_ip="1/minute",
        )
    )
    client = await open_client(app)
    emails = [new_email(), new_email()]

    registered = [
        await client.post("/register/", json={"email": e, "password": "secret1"}) for e in emails
    ]
    tokens = [
        await client.post("/token/", data={"username": emails[0], "password": "secret1"})
        for _ in range(2)
    ]

    assert [r.status_code for r in registered] == [201, 201]
    assert [r.status_code for r in tokens] == [200, 200]
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] == "ok"
    assert ready.json()["checks"]["redis"].startswith("failed")
