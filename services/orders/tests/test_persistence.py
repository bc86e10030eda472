from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from order_common.db import asyncpg_dsn
from orders_service.models import Base
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


async def test_committed_order_notifies_the_outbox_channel(
    database_url: str, user: User, place_order: PlaceOrder
) -> None:
    dsn = asyncpg_dsn(database_url)
    conn = await asyncpg.connect(dsn)
    heard = asyncio.Event()
    await conn.add_listener(OUTBOX_CHANNEL, lambda *_: heard.set())
    try:
        await place_order(user)
        await asyncio.wait_for(heard.wait(), timeout=5)
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
