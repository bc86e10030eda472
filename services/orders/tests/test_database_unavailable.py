"""PostgreSQL unreachable: every endpoint answers 503 with Retry-After and a message naming the
database (never a 500), and /readyz reports it. (That every process recovers by itself when the
database comes back is a chaos case: tests/chaos stops and starts a private PostgreSQL.)"""

from __future__ import annotations

import uuid
from typing import Any

from .conftest import VALID_ORDER, User

# Nothing listens on port 1: connections are refused at once.
DEAD_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/orders"


def _assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"detail": "the database is unavailable; retry in a few seconds"}


async def test_every_endpoint_answers_503_with_retry_after_when_postgresql_is_down(
    start_app: Any, user: User
) -> None:
    async with start_app(database_url=DEAD_DATABASE_URL) as (_, client):
        order_id = uuid.uuid4()
        calls = [
            client.post("/orders/", json=VALID_ORDER, headers=user.headers),
            client.get(f"/orders/{order_id}/", headers=user.headers),
            client.patch(f"/orders/{order_id}/", json={"status": "PAID"}, headers=user.headers),
            client.get(f"/orders/user/{user.id}/", headers=user.headers),
        ]
        for call in calls:
            _assert_unavailable(await call)

        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("failed")
