"""The statements of the write paths, built once at import (so SQLAlchemy's cache key of each
is computed once) and executed with parameters by name (``OrderRepository`` runs them): a
change and its outbox row in one statement, one round trip.

Two rules they keep: parameters are named apart from the columns of an UPDATE's table
(SQLAlchemy would SET a column whose name is passed), and JSON columns take the JSON text
(pydantic's ``dump_json``, in Rust), parsed by the server, not a dict for ``json.dumps``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CTE, Executable, Text, bindparam, cast, literal_column, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert

from orders_service.models import Base, IdempotencyKey, Order, OutboxEvent


def _param(col: Any, name: str | None = None) -> Any:
    return bindparam(name or col.key, type_=col.type)


def _json_param(name: str) -> Any:
    return cast(bindparam(name, type_=Text), JSONB)


def _claim_key() -> Any:
    """Take the ``Idempotency-Key`` for the new order, returning a row; none when a live row
    has it. A racing transaction holding the same key makes this wait until it commits (then
    none) or rolls back (then taken). An expired row is taken over."""
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
    orders = Base.metadata.tables[Order.__tablename__]
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
    return _outbox_insert_from(new_order)


def _outbox_insert_from(source: CTE) -> Executable:
    """``INSERT INTO outbox_events ... SELECT <the row's parameters> FROM source``: written only
    if ``source`` (a data-modifying CTE) wrote its row."""
    e = OutboxEvent.__table__.c
    event = select(
        _param(e.id, "event_id"),
        _param(e.event_type),
        _json_param("payload"),
        _json_param("headers"),
        _param(e.created_at, "event_created_at"),
    ).select_from(source)
    outbox = Base.metadata.tables[OutboxEvent.__tablename__]
    columns = ["id", "event_type", "payload", "headers", "created_at"]
    return insert(outbox).from_select(columns, event, include_defaults=False).returning(e.id)


INSERT_ANNOUNCED = _insert_announced(claimed=False)
INSERT_ANNOUNCED_CLAIMED = _insert_announced(claimed=True)


def _update_status_announced() -> Executable:
    orders = Base.metadata.tables[Order.__tablename__]
    o = orders.c
    changed = (
        update(orders)
        # No parameter is named after a column of orders: SQLAlchemy would SET that column.
        .where(o.id == _param(o.id, "order_id"), o.version == _param(o.version, "read_version"))
        .values(
            status=_param(o.status, "new_status"),
            updated_at=_param(o.updated_at, "new_updated_at"),
            version=o.version + literal_column("1"),
        )
        .returning(o.id)
        .cte("changed")
    )
    return _outbox_insert_from(changed)


UPDATE_STATUS_ANNOUNCED = _update_status_announced()
_O = Order.__table__.c
# What OrderRead holds, and the row version.
LOCK_OWNED = (
    select(
        _O.id,
        _O.user_id,
        _O["items"],
        _O.total_price,
        _O.status,
        _O.created_at,
        _O.updated_at,
        _O.processed_at,
        _O.version,
    )
    .where(_O.id == bindparam("id"), _O.user_id == bindparam("user_id"))
    .with_for_update()
)
