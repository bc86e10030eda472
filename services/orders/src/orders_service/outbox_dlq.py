"""The outbox's dead letters: events the relay set aside after ``relay_max_attempts`` failures
of their own (``orders_service.relay``), kept in the outbox with ``dead_lettered_at`` and
their last error. Looking at them and putting them back, the twin of the bus's dead-letter
queues (``order_common.dlq``) and the worker's (``order_worker.deadletters``).

Command line, configured by the ORDERS_* variables like the service::

    orders-service dlq show    [--limit 10]
    orders-service dlq redrive [--limit N] [--id EVENT_ID ...]

(``make dlq``, ``make dlq-redrive QUEUE=outbox``). Output is JSON lines. A re-drive resets the
rows' attempts and wakes the relays (NOTIFY): each event is then published as if new, under
its own event id."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from orders_service.models import OutboxEvent
from orders_service.uow import OrdersUnitOfWork

DEFAULT_REDRIVE_LIMIT = 1000


def entry(row: OutboxEvent) -> dict[str, Any]:
    return {
        "event_id": str(row.id),
        "event_type": row.event_type,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "created_at": row.created_at.isoformat(),
        "dead_lettered_at": row.dead_lettered_at.isoformat() if row.dead_lettered_at else None,
        "payload": row.payload,
    }


async def show(
    session_factory: async_sessionmaker[AsyncSession], limit: int = 10
) -> tuple[int, list[dict[str, Any]]]:
    """How many dead letters there are, and the first ``limit`` of them."""
    async with OrdersUnitOfWork(session_factory) as uow:
        total = await uow.outbox.count_dead_letters()
        rows = await uow.outbox.dead_letters(limit)
        return total, [entry(row) for row in rows]


async def redrive(
    session_factory: async_sessionmaker[AsyncSession],
    *,
    ids: Sequence[uuid.UUID] | None = None,
    limit: int = DEFAULT_REDRIVE_LIMIT,
) -> int:
    """Put dead letters back in the backlog; how many. The NOTIFY goes with the commit."""
    async with OrdersUnitOfWork(session_factory) as uow:
        moved = await uow.outbox.redrive(ids=ids, limit=limit)
        if moved:
            # Inside the transaction on purpose: rare, and delivered only once it committed.
            await uow.outbox.notify_relays()
        await uow.commit()
    return moved


def json_lines(total: int, entries: list[dict[str, Any]]) -> str:
    header = {"queue": "outbox", "dead_letters": total}
    return "\n".join(json.dumps(line, default=str) for line in [header, *entries])
