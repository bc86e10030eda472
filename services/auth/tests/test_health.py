from __future__ import annotations

from collections.abc import Callable

import httpx

from auth_service.settings import Settings

from .conftest import OpenClient, StartApp


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_ok_when_database_and_redis_answer(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_readyz_is_503_when_the_database_is_unreachable(
    make_settings: Callable[..., Settings], start_app: StartApp, open_client: OpenClient
) -> None:
    app = await start_app(
        make_settings(database_url="postgresql+asyncpg://postgres@127.0.0.1:1/auth")
    )
    client = await open_client(app)

    response = await client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("failed")
    assert response.json()["checks"]["redis"] == "ok"
