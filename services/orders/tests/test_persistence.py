from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi import FastAPI
from order_testing import eventually
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from order_common.db import asyncpg_dsn, build_session_factory
from orders_service.models import Base
from orders_service.notifier import OutboxNotifier
from orders_service.repository import OUTBOX_CHANNEL, OutboxRepository
from orders_service.uow import OrdersUnitOfWork

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


async def test_marking_orders_announced_locks_them_in_id_order(db: AsyncEngine) -> None:
    """As ``lock_many`` (applying a batch of `order_processed`) does: two transactions over
    overlapping orders never deadlock. Rows stored in the opposite of id order would be
    locked in that order by a plain UPDATE."""
    low, high = sorted(uuid.uuid4() for _ in range(2))
    async with db.begin() as conn:
        for order_id in (high, low):  # stored high first
            await conn.execute(
                text(
                    "INSERT INTO orders (id, user_id, items, total_price, status) "
                    "VALUES (:id, 1, '[]'::jsonb, 0, 'PENDING')"
                ),
                {"id": order_id},
            )
    factory = build_session_factory(db)
    async with db.connect() as holder:
        await holder.begin()
        await holder.execute(text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": high})

        async def announce() -> None:
            async with OrdersUnitOfWork(factory) as uow:
                await uow.orders.mark_announced([high, low], datetime.now(UTC))
                await uow.commit()

        marking = asyncio.create_task(announce())

        # It took the lower id first and now waits for the higher one, which the holder has.
        async def low_is_taken() -> bool:
            async with db.connect() as probe:
                await probe.execute(text("SET lock_timeout = '50ms'"))
                try:
                    await probe.execute(
                        text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": low}
                    )
                except DBAPIError:
                    return True
                finally:
                    await probe.rollback()
                return False

        await eventually(low_is_taken, timeout=5)
        assert not marking.done()
        await holder.rollback()
    await asyncio.wait_for(marking, timeout=5)
    async with db.connect() as conn:
        announced = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM orders WHERE id IN (:a, :b) AND announced_at IS NOT NULL"
                ),
                {"a": low, "b": high},
            )
        ).scalar_one()
    assert announced == 2
