"""What a write costs the database, counted (never timed): the statements and transaction
boundaries SQLAlchemy sends for one request. With asyncpg each is one round trip (BEGIN goes
out with the first statement's turn, but as a message of its own)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
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
