"""Every query of the orders database. Repositories flush at most; the unit of work commits."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Executable,
    Text,
    Uuid,
    bindparam,
    cast,
    column,
    delete,
    func,
    select,
    tuple_,
    update,
    values,
)
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession

from order_common.events import Envelope
from order_common.telemetry import inject_headers
from orders_service.models import Base, IdempotencyKey, Order, OutboxEvent

# Relays LISTEN here. The API NOTIFYs it after a commit that wrote outbox rows, outside the
# transaction (orders_service.notifier).
OUTBOX_CHANNEL = "orders_outbox"


class OrderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def insert_announced(
        self, order: Mapping[str, Any], event: Mapping[str, Any], claim: Mapping[str, Any] | None
    ) -> bool:
        """INSERT the order and its outbox row (``OutboxRepository.row``) in one statement,
        after claiming the idempotency key (``IdempotencyKeyRepository.claim``'s arguments)
        when ``claim`` is given. False, and nothing written, when the key is already taken.
        One round trip for what the ORM sent as two to four; the caller commits."""
        params = {**order, **event}
        if claim is None:
            await self.session.execute(_INSERT_ANNOUNCED, params)
            return True
        result = await self.session.execute(_INSERT_ANNOUNCED_CLAIMED, {**params, **claim})
        return result.first() is not None

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


def _param(col: Any, name: str | None = None) -> Any:
    return bindparam(name or col.key, type_=col.type)


def _json_param(name: str) -> Any:
    # Bound as the JSON text itself (pydantic's dump_json, in Rust) and parsed by the server,
    # instead of a dict that SQLAlchemy passes through json.dumps.
    return cast(bindparam(name, type_=Text), JSONB)


def _claim_key() -> Any:
    """The upsert of ``IdempotencyKeyRepository.claim``: takes the key unless a live row has it
    (a racing holder makes it wait for that transaction's outcome), returning a row when taken."""
    table = Base.metadata.tables[IdempotencyKey.__tablename__]
    keys = table.c
    stmt = insert(table).values(
        user_id=_param(keys.user_id, "user_id"),
        key=_param(keys.key, "key"),
        request_hash=_param(keys.request_hash),
        order_id=_param(keys.order_id, "id"),
        status_code=_param(keys.status_code),
        created_at=_param(keys.created_at),
        expires_at=_param(keys.expires_at),
    )
    return stmt.on_conflict_do_update(
        index_elements=[keys.user_id, keys.key],
        set_={
            name: stmt.excluded[name]
            for name in ("request_hash", "order_id", "status_code", "created_at", "expires_at")
        },
        where=keys.expires_at <= _param(keys.created_at),
    ).returning(keys.order_id)


def _insert_announced(*, claimed: bool) -> Executable:
    """``WITH [claim AS (upsert of the key),] new_order AS (INSERT INTO orders ... [FROM
    claim]) INSERT INTO outbox_events ... FROM new_order``: the event only with its order, the
    order only with its key. Built once; executed with the parameters by name."""
    tables = Base.metadata.tables
    orders, outbox = tables[Order.__tablename__], tables[OutboxEvent.__tablename__]
    o = orders.c
    order_values = [
        _param(o.id),
        _param(o.user_id),
        _json_param("items"),
        _param(o.total_price),
        _param(o.status),
        _param(o.version),
        _param(o.created_at),
        _param(o.updated_at),
    ]
    order_columns = ["id", "user_id", "items", "total_price", "status", "version"]
    order_columns += ["created_at", "updated_at"]
    source = select(*order_values)
    if claimed:
        source = source.select_from(_claim_key().cte("claim"))
    new_order = (
        insert(orders)
        .from_select(order_columns, source, include_defaults=False)
        .returning(o.id)
        .cte("new_order")
    )
    e = outbox.c
    event = select(
        _param(e.id, "event_id"),
        _param(e.event_type),
        _json_param("payload"),
        _json_param("headers"),
        _param(e.created_at, "event_created_at"),
    ).select_from(new_order)
    stmt = insert(outbox).from_select(
        ["id", "event_type", "payload", "headers", "created_at"], event, include_defaults=False
    )
    return stmt.returning(e.id) if claimed else stmt


_INSERT_ANNOUNCED = _insert_announced(claimed=False)
_INSERT_ANNOUNCED_CLAIMED = _insert_announced(claimed=True)


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
        index of unpublished events serves both)."""
        row = (
            await self.session.execute(
                select(func.count(), func.min(OutboxEvent.created_at)).where(
                    OutboxEvent.published_at.is_(None)
                )
            )
        ).one()
        return int(row[0]), row[1]

    async def claim_unpublished(self, limit: int) -> Sequence[OutboxEvent]:
        """Lock up to ``limit`` of the oldest unpublished events. Rows another relay holds are
        skipped, not waited for, so relays share the backlog."""
        stmt = (
            select(OutboxEvent)
            .where(OutboxEvent.published_at.is_(None))
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

    async def count_failed_attempt(self, ids: Sequence[uuid.UUID]) -> None:
        await self.session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_(ids))
            .values(attempts=OutboxEvent.attempts + 1)
            .execution_options(synchronize_session=False)
        )

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
