"""What a write costs the database, counted (never timed): the statements and transaction
boundaries SQLAlchemy sends for one request. With asyncpg each is one round trip (BEGIN goes
out with the first statement's turn, but as a message of its own)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis import Redis
from sqlalchemy import event
from sqlalchemy.engine import Connection

from .conftest import VALID_ORDER, AppClient, User


@contextmanager
def database_log(app: FastAPI) -> Iterator[list[str]]:
    """BEGIN, COMMIT, ROLLBACK and the first words of every statement on the app's engine."""
    log: list[str] = []
    engine = app.state.engine.sync_engine

    def statement(_conn: Connection, _cursor: Any, sql: str, *_: Any) -> None:
        log.append(" ".join(sql.split()[:4]))

    hooks: list[tuple[str, Any]] = [
        ("before_cursor_execute", statement),
        ("begin", lambda _conn: log.append("BEGIN")),
        ("commit", lambda _conn: log.append("COMMIT")),
        ("rollback", lambda _conn: log.append("ROLLBACK")),
    ]
    for name, hook in hooks:
        event.listen(engine, name, hook)
    try:
        yield log
    finally:
        for name, hook in hooks:
            event.remove(engine, name, hook)


@pytest.fixture
async def fresh(start_app: AppClient) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app of its own: its pool holds no connection an earlier test killed (whose first
    statement would fail and be run again, by design, on a new one)."""
    async with start_app() as pair:
        yield pair


async def test_a_post_is_one_statement_in_its_transaction(
    fresh: tuple[FastAPI, httpx.AsyncClient], user: User
) -> None:
    """The order and its outbox row in one INSERT (CTE); nothing read back before or after."""
    app, client = fresh
    with database_log(app) as log:
        response = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
    assert response.status_code == 201
    assert log == ["BEGIN", "WITH new_order AS (INSERT", "COMMIT"]


async def test_a_post_with_an_idempotency_key_claims_it_in_the_same_statement(
    fresh: tuple[FastAPI, httpx.AsyncClient], user: User
) -> None:
    app, client = fresh
    headers = {**user.headers, "Idempotency-Key": str(uuid.uuid4())}
    with database_log(app) as first:
        created = await client.post("/orders/", json=VALID_ORDER, headers=headers)
    with database_log(app) as retry:
        replayed = await client.post("/orders/", json=VALID_ORDER, headers=headers)

    assert (created.status_code, replayed.status_code) == (201, 201)
    assert replayed.json() == created.json()
    assert first == ["BEGIN", "WITH claim AS (INSERT", "COMMIT"]
    # The retry: the same statement writes nothing; the key's row and the order are read.
    assert [entry.split()[0] for entry in retry] == [
        "BEGIN",
        "WITH",
        "SELECT",
        "SELECT",
        "ROLLBACK",
    ]


async def test_a_patch_is_the_locking_read_and_one_statement(
    fresh: tuple[FastAPI, httpx.AsyncClient], user: User
) -> None:
    """The row lock, then the UPDATE and its outbox row in one statement (CTE)."""
    app, client = fresh
    created = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
    path = f"/orders/{created.json()['id']}/"

    with database_log(app) as log:
        changed = await client.patch(path, json={"status": "PAID"}, headers=user.headers)
    with database_log(app) as again:
        unchanged = await client.patch(path, json={"status": "PAID"}, headers=user.headers)

    assert (changed.status_code, unchanged.status_code) == (200, 200)
    locking_read = "SELECT orders.id, orders.user_id, orders.items,"
    assert log == ["BEGIN", locking_read, "WITH changed AS (UPDATE", "COMMIT"]
    assert again == ["BEGIN", locking_read, "ROLLBACK"]  # the status it has: a no-op


async def test_the_answers_built_from_what_was_written_are_the_stored_orders_byte_for_byte(
    client: httpx.AsyncClient, app: FastAPI, redis_client: Redis, user: User
) -> None:
    """POST and PATCH answer without reading the row back: their bytes must be those of the
    order as PostgreSQL holds it (a GET with the cache entry removed reads and serialises it)."""
    body = {
        "items": [
            {"name": "  Café au lait ☕ ", "quantity": 3, "price": 2},
            {"name": "Mouse", "quantity": 2, "price": "25.5"},
        ],
        "total_price": "57.0",
    }
    created = await client.post("/orders/", json=body, headers=user.headers)
    path = f"/orders/{created.json()['id']}/"
    changed = await client.patch(path, json={"status": "PAID"}, headers=user.headers)
    assert (created.status_code, changed.status_code) == (201, 200)

    redis_client.delete(app.state.cache.key(uuid.UUID(created.json()["id"])))
    stored = await client.get(path, headers=user.headers)

    assert stored.content == changed.content
    as_created = json.loads(stored.content) | {"status": "PENDING"}
    as_created["updated_at"] = as_created["created_at"]
    assert (
        created.content
        == json.dumps(as_created, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert created.json()["items"][0] == {"name": "Café au lait ☕", "quantity": 3, "price": "2.00"}
