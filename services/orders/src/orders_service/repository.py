"""Every query of the orders database. Repositories flush at most; the unit of work commits."""

from __future__ import annotations

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
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from order_common.events import Envelope
from order_common.telemetry import inject_headers
from orders_service.models import IdempotencyKey, Order, OutboxEvent

# Relays LISTEN here. The API NOTIFYs it after a commit that wrote outbox rows, outside the
# transaction (orders_service.notifier).
OUTBOX_CHANNEL = "orders_outbox"


class OrderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, order: Order) -> None:
        self.session.add(order)

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

    async def get_owned(
        self, order_id: uuid.UUID, user_id: int, *, for_update: bool = False
    ) -> Order | None:
        """The order if ``user_id`` owns it: someone else's order is as absent as a missing one."""
        stmt = select(Order).where(Order.id == order_id, Order.user_id == user_id)
        if for_update:
            stmt = stmt.with_for_update().execution_options(populate_existing=True)
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
        nothing a reader sees changed)."""
        if not order_ids:
            return
        await self.session.execute(
            update(Order)
            .where(Order.id.in_(order_ids), Order.processed_at.is_(None))
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

    async def claim(
        self,
        *,
        user_id: int,
        key: str,
        request_hash: str,
        order_id: uuid.UUID,
        status_code: int,
        now: datetime,
        expires_at: datetime,
    ) -> bool:
        """Take ``key`` for a new order; False when it is already taken by a live row. A racing
        transaction holding the same key makes this wait until it commits (then False) or rolls
        back (then True). An expired row is taken over."""
        stmt = insert(IdempotencyKey).values(
            user_id=user_id,
            key=key,
            request_hash=request_hash,
            order_id=order_id,
            status_code=status_code,
            created_at=now,
            expires_at=expires_at,
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[IdempotencyKey.user_id, IdempotencyKey.key],
            set_={
                "request_hash": stmt.excluded.request_hash,
                "order_id": stmt.excluded.order_id,
                "status_code": stmt.excluded.status_code,
                "created_at": stmt.excluded.created_at,
                "expires_at": stmt.excluded.expires_at,
            },
            where=IdempotencyKey.expires_at <= now,
        ).returning(IdempotencyKey.order_id)
        return (await self.session.execute(upsert)).first() is not None

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
