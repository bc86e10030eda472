"""ORM tables of the orders database. They never leave the service: the API speaks
``order_common.orders`` schemas and the bus speaks ``order_common.events`` envelopes."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from order_common.db import naming_metadata
from order_common.orders import OrderStatus


class Base(DeclarativeBase):
    metadata = naming_metadata()
    # Every *_at column is timezone-aware.
    type_annotation_map = {datetime: DateTime(timezone=True)}


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    # The JWT subject. No foreign key: users live in the auth service's database.
    user_id: Mapped[int] = mapped_column(BigInteger)
    # Items as their JSON form (prices as "400.00" strings, so they stay exact).
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    total_price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    status: Mapped[OrderStatus] = mapped_column(
        Enum(
            OrderStatus,
            name="status",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda enum: [member.value for member in enum],
        ),
        server_default=OrderStatus.PENDING.value,
    )
    # Bumped by the ORM on every UPDATE. The cache compares it so that a slow writer cannot
    # replace a newer cache entry with an older one.
    version: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    processed_at: Mapped[datetime | None] = mapped_column()
    # When its latest `new_order` was published; None while one waits in the outbox. An order
    # unprocessed long after it is announced again (orders_service.service.reannounce).
    announced_at: Mapped[datetime | None] = mapped_column()

    __mapper_args__ = {"version_id_col": version}
    __table_args__ = (
        CheckConstraint("total_price >= 0", name="total_price_not_negative"),
        CheckConstraint("jsonb_typeof(items) = 'array'", name="items_is_array"),
        # Serves the owner's list, newest first, with keyset pagination on (created_at, id).
        Index("ix_orders_user_id_created_at_id", "user_id", "created_at", "id"),
        # The orders awaiting processing only: small however many orders there are.
        Index(
            "ix_orders_unprocessed_announced_at",
            "announced_at",
            postgresql_where=text("processed_at IS NULL"),
        ),
    )


class OutboxEvent(Base):
    """An event written in the same transaction as the change it announces.

    The relay claims unpublished rows oldest first with ``FOR UPDATE SKIP LOCKED`` (so several
    relays can run), publishes them and sets ``published_at`` once the broker confirmed;
    ``attempts`` counts the publishes that failed on the row's own content (a payload that is
    not a valid envelope, headers that cannot be encoded), never those the broker answered
    (a nack, an outage), and
    ``last_error`` says why the latest failed. After ``relay_max_attempts`` such failures the
    row is dead-lettered (``dead_lettered_at``): the relay skips it until ``orders-service dlq
    redrive`` puts it back. Published rows are deleted after the retention period; unpublished
    ones, dead-lettered included, never."""

    __tablename__ = "outbox_events"

    # The envelope's event_id: consumers de-duplicate on it.
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    # The whole envelope as JSON, exactly what goes on the bus.
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # Message headers to send along, e.g. the W3C trace context of the request that wrote it.
    headers: Mapped[dict[str, str]] = mapped_column(
        JSONB, default=dict, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column()
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)
    dead_lettered_at: Mapped[datetime | None] = mapped_column()

    __table_args__ = (
        CheckConstraint("attempts >= 0", name="attempts_not_negative"),
        # Only the backlog is indexed: it stays small however many events were ever published.
        Index(
            "ix_outbox_events_unpublished_created_at",
            "created_at",
            postgresql_where=text("published_at IS NULL AND dead_lettered_at IS NULL"),
        ),
        Index(
            "ix_outbox_events_dead_lettered_at",
            "dead_lettered_at",
            postgresql_where=text("dead_lettered_at IS NOT NULL"),
        ),
        # The retention clean-up finds published events by age without scanning the table.
        Index(
            "ix_outbox_events_published_at",
            "published_at",
            postgresql_where=text("published_at IS NOT NULL"),
        ),
    )


class IdempotencyKey(Base):
    """A client's ``Idempotency-Key`` on ``POST /orders/`` and the order it created, written in
    the order's own transaction. The primary key (user_id, key) is what makes 20 racing
    requests with one key create one order: the others wait on it and read this row. Keys of
    different users never collide. No foreign key to the order: the row is written first, so a
    racing request blocks before any order is built."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of the canonical JSON of the validated body: the same key with another body is
    # refused, not answered with the first order.
    request_hash: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[uuid.UUID] = mapped_column()
    status_code: Mapped[int] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column()

    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)
