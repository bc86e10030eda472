"""PostgreSQL unreachable: registering and logging in answer 503 with Retry-After and a message
naming the database, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from auth_service.settings import Settings

from .conftest import OpenClient, StartApp

DEAD_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/auth"


async def test_register_and_token_answer_503_with_retry_after_when_postgresql_is_down(
    make_settings: Callable[..., Settings], start_app: StartApp, open_client: OpenClient
) -> None:
    app = await start_app(make_settings(database_url=DEAD_DATABASE_URL))
    client = await open_client(app)
    responses: list[Any] = [
        await client.post("/register/", json={"email": "a@example.com", "password": "secret-1"}),
        await client.post("/token/", data={"username": "a@example.com", "password": "secret-1"}),
    ]
    for response in responses:
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "5"
        assert response.json() == {"detail": "the database is unavailable; retry in a few seconds"}
