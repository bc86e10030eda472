"""Every query of the orders database. Repositories flush at most; the unit of work commits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Text,
    Uuid,
    case,
    column,
    delete,
    func,
    select,
    tuple_,
    update,
    values,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from order_common.events import Envelope
from order_common.orders import OrderRead, OrderStatus
from order_common.telemetry import inject_headers
from orders_service import statements
from orders_service.models import IdempotencyKey, Order, OutboxEvent

# Relays LISTEN here. The API NOTIFYs it after a commit that wrote outbox rows, outside the
# transaction (orders_service.notifier).
OUTBOX_CHANNEL = "orders_outbox"


class OrderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_announced(
        self, order: Mapping[str, Any], event: Mapping[str, Any], claim: Mapping[str, Any] | None
    ) -> bool:
        """INSERT the order (its columns by name) and its outbox row (``OutboxRepository.row``)
        in one statement, after claiming the idempotency key when ``claim`` is given (``key``,
        ``request_hash``, ``status_code``, ``expires_at``; the row gets the order's id, owner and
        ``created_at``). False, and nothing written, when the key is already taken. One round
        trip for what the ORM sent as two or three; the caller commits."""
        params = {**order, **event}
        if claim is None:
            await self.session.execute(statements.INSERT_ANNOUNCED, params)
            return True
        result = await self.session.execute(
            statements.INSERT_ANNOUNCED_CLAIMED, {**params, **claim}
        )
        return result.first() is not None

    async def lock_owned(self, order_id: uuid.UUID, user_id: int) -> tuple[OrderRead, int] | None:
        """The order if ``user_id`` owns it (as ``get_owned``), locked ``FOR UPDATE``: the order
        the API answers and its row version; nothing enters the session."""
        result = await self.session.execute(
            statements.LOCK_OWNED, {"id": order_id, "user_id": user_id}
        )
        row = result.first()
        return None if row is None else (OrderRead.model_validate(row), row.version)

    async def update_status_announced(
        self,
        order_id: uuid.UUID,
        *,
        version: int,
        status: OrderStatus,
        updated_at: datetime,
        event: Mapping[str, Any],
    ) -> int:
        """Set the status of the order at row ``version`` (locked by ``lock_owned``) and write
        its outbox row (``OutboxRepository.row``), in one statement; the version is bumped as
        the ORM would. Returns the new version."""
        result = await self.session.execute(
            statements.UPDATE_STATUS_ANNOUNCED,
            {
                "order_id": order_id,
                "read_version": version,
                "new_status": status,
                "new_updated_at": updated_at,
                **event,
            },
        )
        if result.first() is None:  # as the ORM's version check: never, under the row lock
            raise StaleDataError(f"order {order_id} is no longer at version {version}")
        return version + 1

    async def lock_many(self, order_ids: Sequence[uuid.UUID]) -> Sequence[Order]:
        """The orders of ``order_ids`` that exist, locked ``FOR UPDATE`` in id order: two
        transactions locking overlapping sets take the locks in one order, never a deadlock."""
        stmt = (
            select(Order)
            .where(Order.id.in_(order_ids))
            .order_by(Order.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(stmt)).all()

    async def set_processed(self, processed_at: Mapping[uuid.UUID, datetime]) -> None:
        """One UPDATE for many orders: ``processed_at`` where it is not set yet, and the row
        version bumped as the ORM would (the cache compares it). Call it on rows locked by
        ``lock_many``; the ORM objects in the session are left as they were."""
        rows = values(
            column("id", Uuid()),
            column("processed_at", DateTime(timezone=True)),
            name="processed",
        ).data(list(processed_at.items()))
        await self.session.execute(
            update(Order)
            .where(Order.id == rows.c.id, Order.processed_at.is_(None))
            .values(processed_at=rows.c.processed_at, version=Order.version + 1)
            .execution_options(synchronize_session=False)
        )

    async def get_owned(self, order_id: uuid.UUID, user_id: int) -> Order | None:
        """The order if ``user_id`` owns it: someone else's order is as absent as a missing one."""
        stmt = select(Order).where(Order.id == order_id, Order.user_id == user_id)
        result: Order | None = await self.session.scalar(stmt)
        return result

    async def list_for_user(
        self, user_id: int, *, limit: int, before: tuple[datetime, uuid.UUID] | None = None
    ) -> Sequence[Order]:
        """Newest first. ``before`` is the (created_at, id) of the last row of the previous
        page; the row comparison walks ix_orders_user_id_created_at_id backwards."""
        stmt = select(Order).where(Order.user_id == user_id)
        if before is not None:
            stmt = stmt.where(tuple_(Order.created_at, Order.id) < tuple_(*before))
        stmt = stmt.order_by(Order.created_at.desc(), Order.id.desc()).limit(limit)
        return (await self.session.scalars(stmt)).all()

    async def mark_announced(self, order_ids: Sequence[uuid.UUID], at: datetime) -> None:
        """Their `new_order` was published (a Core UPDATE: no version bump, no cache refresh;
        nothing a reader sees changed). The rows are locked in id order first, as
        ``lock_many`` locks them: an UPDATE alone takes its locks in whatever order the plan
        reads the rows, and the same process applying a batch of `order_processed` to some of
        these orders at the same time would deadlock with it."""
        if not order_ids:
            return
        locked = (
            select(Order.id)
            .where(Order.id.in_(order_ids), Order.processed_at.is_(None))
            .order_by(Order.id)
            .with_for_update()
        )
        await self.session.execute(
            update(Order)
            .where(Order.id.in_(locked.scalar_subquery()))
            .values(announced_at=at)
            .execution_options(synchronize_session=False)
        )

    async def claim_unprocessed_announced_before(
        self, cutoff: datetime, limit: int
    ) -> Sequence[Order]:
        """Lock up to ``limit`` unprocessed orders whose last `new_order` was published before
        ``cutoff`` (rows another relay holds are skipped)."""
        stmt = (
            select(Order)
            .where(Order.processed_at.is_(None), Order.announced_at < cutoff)
            .order_by(Order.announced_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.scalars(stmt)).all()

    async def clear_announced(self, order_ids: Sequence[uuid.UUID]) -> None:
        await self.session.execute(
            update(Order)
            .where(Order.id.in_(order_ids))
            .values(announced_at=None)
            .execution_options(synchronize_session=False)
        )


class IdempotencyKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: int, key: str) -> IdempotencyKey | None:
        return await self.session.get(IdempotencyKey, (user_id, key))

    async def delete_expired(self, now: datetime, limit: int) -> int:
        batch = (
            select(IdempotencyKey.user_id, IdempotencyKey.key)
            .where(IdempotencyKey.expires_at <= now)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await self.session.execute(
            delete(IdempotencyKey)
            .where(tuple_(IdempotencyKey.user_id, IdempotencyKey.key).in_(batch))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class OutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.added = 0  # rows added in this unit of work, not yet committed

    async def add(
        self, event: Envelope[Any], *, headers: dict[str, str] | None = None
    ) -> OutboxEvent:
        """``headers`` default to the current trace context (the request's), which the relay's
        publish continues: one trace follows the order from the POST through the bus."""
        row = OutboxEvent(
            id=event.event_id,
            event_type=event.event_type.value,
            payload=event.model_dump(mode="json"),
            headers=inject_headers() if headers is None else headers,
            created_at=event.occurred_at,
        )
        self.session.add(row)
        self.added += 1
        return row

    def row(self, event: Envelope[Any], *, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """``add`` as the parameters of a statement that writes the row itself
        (``OrderRepository.insert_announced``); counted as added to this unit of work."""
        self.added += 1
        return {
            "event_id": event.event_id,
            "event_type": event.event_type.value,
            "payload": event.model_dump_json(),
            "headers": json.dumps(inject_headers() if headers is None else headers),
            "event_created_at": event.occurred_at,
        }

    async def backlog(self) -> tuple[int, datetime | None]:
        """How many events wait to be published, and when the oldest was written (the partial
        index of unpublished events serves both). Dead letters do not count: they wait for
        an operator, not for the relay."""
        row = (
            await self.session.execute(
                select(func.count(), func.min(OutboxEvent.created_at)).where(
                    OutboxEvent.published_at.is_(None), OutboxEvent.dead_lettered_at.is_(None)
                )
            )
        ).one()
        return int(row[0]), row[1]

    async def claim_unpublished(self, limit: int) -> Sequence[OutboxEvent]:
        """Lock up to ``limit`` of the oldest unpublished events that are not dead letters.
        Rows another relay holds are skipped, not waited for, so relays share the backlog."""
        stmt = (
            select(OutboxEvent)
            .where(OutboxEvent.published_at.is_(None), OutboxEvent.dead_lettered_at.is_(None))
            .order_by(OutboxEvent.created_at, OutboxEvent.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return (await self.session.scalars(stmt)).all()

    async def mark_published(self, ids: Sequence[uuid.UUID], published_at: datetime) -> None:
        await self.session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_(ids))
            .values(published_at=published_at)
            .execution_options(synchronize_session=False)
        )

    async def count_failed_attempts(
        self, errors: Mapping[uuid.UUID, str], *, max_attempts: int, now: datetime
    ) -> dict[uuid.UUID, int]:
        """One failed attempt more for each row of ``errors`` (its error kept as
        ``last_error``), in one UPDATE; a row reaching ``max_attempts`` is dead-lettered.
        Returns the dead-lettered rows with their attempts."""
        if not errors:
            return {}
        rows = values(column("id", Uuid()), column("error", Text()), name="failed").data(
            list(errors.items())
        )
        attempts = OutboxEvent.attempts + 1
        result = await self.session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id == rows.c.id)
            .values(
                attempts=attempts,
                last_error=rows.c.error,
                dead_lettered_at=case((attempts >= max_attempts, now), else_=None),
            )
            .returning(OutboxEvent.id, OutboxEvent.attempts, OutboxEvent.dead_lettered_at)
            .execution_options(synchronize_session=False)
        )
        return {row.id: row.attempts for row in result if row.dead_lettered_at is not None}

    async def dead_letters(self, limit: int) -> Sequence[OutboxEvent]:
        """The dead-lettered events, oldest dead letter first."""
        stmt = (
            select(OutboxEvent)
            .where(OutboxEvent.dead_lettered_at.is_not(None))
            .order_by(OutboxEvent.dead_lettered_at, OutboxEvent.id)
            .limit(limit)
        )
        return (await self.session.scalars(stmt)).all()

    async def count_dead_letters(self) -> int:
        stmt = select(func.count()).where(OutboxEvent.dead_lettered_at.is_not(None))
        return int(await self.session.scalar(stmt) or 0)

    async def redrive(self, *, ids: Sequence[uuid.UUID] | None = None, limit: int) -> int:
        """Put up to ``limit`` dead letters (those of ``ids`` only, if given) back in the
        backlog with their attempts reset; ``last_error`` stays for the record. Returns how
        many."""
        batch = (
            select(OutboxEvent.id)
            .where(OutboxEvent.dead_lettered_at.is_not(None))
            .order_by(OutboxEvent.dead_lettered_at, OutboxEvent.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if ids is not None:
            batch = batch.where(OutboxEvent.id.in_(ids))
        result = await self.session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_(batch.scalar_subquery()))
            .values(dead_lettered_at=None, attempts=0)
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def notify_relays(self) -> None:
        """NOTIFY the relays when this transaction commits (the API's orders do it outside
        theirs instead: ``orders_service.notifier``)."""
        await self.session.execute(select(func.pg_notify(OUTBOX_CHANNEL, "")))

    async def delete_published_before(self, cutoff: datetime, limit: int) -> int:
        """Delete up to ``limit`` events published before ``cutoff``; unpublished events are
        never touched. Returns how many went. Bounded batches keep each transaction short."""
        batch = (
            select(OutboxEvent.id)
            .where(OutboxEvent.published_at.is_not(None), OutboxEvent.published_at < cutoff)
            .order_by(OutboxEvent.published_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await self.session.execute(
            delete(OutboxEvent)
            .where(OutboxEvent.id.in_(batch.scalar_subquery()))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
