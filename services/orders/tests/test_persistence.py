from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI
from order_testing import eventually
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from order_common.db import asyncpg_dsn
from orders_service.models import Base
from orders_service.notifier import OutboxNotifier
from orders_service.repository import OUTBOX_CHANNEL, OutboxRepository

from .conftest import User

PlaceOrder = Callable[..., Awaitable[dict[str, Any]]]


async def test_migrations_match_the_models(db: AsyncEngine) -> None:
    async with db.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
        )

    assert diff == []


@pytest.mark.parametrize(
    ("items", "total", "status", "constraint"),
    [
        ("[]", "-1", "PENDING", "ck_orders_total_price_not_negative"),
        ("[]", "1", "LOST", "ck_orders_status"),
        ('{"name": "Pen"}', "1", "PENDING", "ck_orders_items_is_array"),
    ],
    ids=["negative-total", "unknown-status", "items-not-an-array"],
)
async def test_database_constraints_refuse_bad_rows(
    db: AsyncEngine, items: str, total: str, status: str, constraint: str
) -> None:
    async with db.connect() as conn:
        with pytest.raises(IntegrityError, match=constraint):
            await conn.execute(
                text(
                    "INSERT INTO orders (id, user_id, items, total_price, status) "
                    "VALUES (gen_random_uuid(), 1, CAST(:items AS jsonb), CAST(:total AS numeric), "
                    ":status)"
                ),
                {"items": items, "total": total, "status": status},
            )


async def test_committed_order_notifies_the_outbox_channel_from_outside_its_transaction(
    app: FastAPI, database_url: str, user: User, place_order: PlaceOrder
) -> None:
    """The NOTIFY is sent by the notifier's own connection after the order committed, not in
    the order's transaction (where it would take a database-wide lock at commit that every
    committing order queues behind). PostgreSQL delivers a NOTIFY only at commit either way,
    so what tells them apart is the sender: the notifier's server process, not a pooled one."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    senders: list[int] = []
    await conn.add_listener(
        OUTBOX_CHANNEL, lambda _conn, pid, _channel, _payload: senders.append(pid)
    )
    notifier: OutboxNotifier = app.state.outbox_notifier
    try:
        sent = notifier.sent
        await place_order(user)
        await eventually(lambda: notifier.sent > sent and len(senders) > 0, timeout=5)
    finally:
        await conn.close()
    assert notifier.backend_pid is not None
    assert senders == [notifier.backend_pid]


async def test_notifies_asked_for_together_are_sent_as_one(app: FastAPI, database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    heard: list[object] = []
    await conn.add_listener(OUTBOX_CHANNEL, lambda *args: heard.append(args))
    notifier: OutboxNotifier = app.state.outbox_notifier
    try:
        sent = notifier.sent
        for _ in range(100):  # a hundred commits while no NOTIFY is on its way
            notifier.notify()
        await eventually(lambda: notifier.sent > sent)
        await asyncio.sleep(0.3)  # room for a second one to show up
        assert notifier.sent == sent + 1
        assert len(heard) == 1
    finally:
        await conn.close()


async def test_relays_claim_different_outbox_rows_with_skip_locked(
    db: AsyncEngine, user: User, place_order: PlaceOrder
) -> None:
    for _ in range(2):
        await place_order(user)

    # Two relays, each in its own transaction: the second skips the row the first holds.
    async with AsyncSession(db) as first_relay, AsyncSession(db) as second_relay:
        first = await OutboxRepository(first_relay).claim_unpublished(1)
        second = await OutboxRepository(second_relay).claim_unpublished(1)

        assert len(first) == len(second) == 1
        assert first[0].id != second[0].id
