"""The orders use cases. They know nothing of HTTP: they take plain arguments and a unit of
work and raise ``order_common.errors`` that carry their status code. The routes call them, and
so does the event consumer that applies ``order_processed`` (``orders_service.order_processed``)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from pydantic import TypeAdapter

from order_common.db import retry_on_disconnect
from order_common.errors import Conflict, Forbidden, InvalidInput, NotFound
from order_common.events import Envelope, EventType, NewOrder, OrderStatusChanged, envelope
from order_common.orders import (
    IllegalTransition,
    OrderCreate,
    OrderItem,
    OrderRead,
    OrderStatus,
    transition,
)
from orders_service.cache import CachedOrder, OrderCache, order_json
from orders_service.metrics import (
    IDEMPOTENT_REPLAYS,
    ORDERS_CREATED,
    ORDERS_REANNOUNCED,
    STATUS_CHANGES,
)
from orders_service.models import Order
from orders_service.schemas import Cursor, OrderPage
from orders_service.uow import OrdersUnitOfWork


class Created(NamedTuple):
    order: OrderRead
    body: bytes  # the order as the API answers it (order_json)
    replayed: bool  # True: the Idempotency-Key was seen; this is the order it created


@dataclass(frozen=True)
class Idempotency:
    """The client's ``Idempotency-Key`` and how long it is remembered."""

    key: str
    ttl: timedelta


_CREATED = 201
_ITEMS = TypeAdapter(list[OrderItem])


class Processed(NamedTuple):
    order: OrderRead
    changed: bool  # False: it was processed already and this report changed nothing


def _now() -> datetime:
    return datetime.now(UTC)


def _read(order: Order) -> OrderRead:
    return OrderRead.model_validate(order)


def _not_found() -> NotFound:
    # One message for "no such order" and "someone else's order": existence is not revealed.
    return NotFound("order not found")


def request_hash(data: OrderCreate) -> str:
    """SHA-256 of the validated body as canonical JSON: "400.0" and "400.00" are one order."""
    canonical = json.dumps(data.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@retry_on_disconnect
async def create_order(
    uow: OrdersUnitOfWork,
    cache: OrderCache,
    *,
    user_id: int,
    data: OrderCreate,
    idempotency: Idempotency | None = None,
) -> Created:
    """Create the order and its ``new_order`` event in one transaction. With an idempotency
    key the key is claimed first in that same transaction: a retry, or a request racing this
    one, gets the order the key created (``replayed``) and creates none.

    The order, its event and the claim are one statement (``insert_announced``): BEGIN, it,
    COMMIT. The answer is built from what was written (nothing is read back): the row holds
    exactly these values, and a new row's version is 1."""
    now = _now()
    # Every part is validated already (the body) or made here: no second validation.
    order = OrderRead.model_construct(
        id=uuid.uuid4(),
        user_id=user_id,
        items=data.items,
        total_price=data.total_price,
        status=OrderStatus.PENDING,
        created_at=now,
        updated_at=now,
        processed_at=None,
    )
    claim: dict[str, Any] | None = None
    if idempotency is not None:
        claim = {
            "key": idempotency.key,
            "request_hash": request_hash(data),
            "status_code": _CREATED,
            "expires_at": now + idempotency.ttl,
        }
    async with uow:
        created = await uow.orders.insert_announced(
            _order_row(order), uow.outbox.row(_new_order_event(order)), claim
        )
        if not created and claim is not None:  # the key is taken: by a retry, or a race
            return await _replay(
                uow, user_id=user_id, key=claim["key"], fingerprint=claim["request_hash"]
            )
        await uow.commit()
    ORDERS_CREATED.inc()
    body = await cache.put(order, _NEW_ROW_VERSION)
    return Created(order, body, replayed=False)


_NEW_ROW_VERSION = 1


def _order_row(order: OrderRead) -> dict[str, Any]:
    return {
        "id": order.id,
        "user_id": order.user_id,
        "items": _ITEMS.dump_json(order.items).decode(),
        "total_price": order.total_price,
        "status": order.status,
        "version": _NEW_ROW_VERSION,
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }


def _new_order_event(order: OrderRead) -> Envelope[NewOrder]:
    return envelope(
        EventType.NEW_ORDER,
        NewOrder(
            order_id=order.id,
            user_id=order.user_id,
            items=order.items,
            total_price=order.total_price,
            status=order.status,
            created_at=order.created_at,
        ),
    )


async def reannounce(uow: OrdersUnitOfWork, *, older_than: timedelta, limit: int = 100) -> int:
    """Announce again (a new `new_order`, under a new event id, in the outbox) the orders
    still unprocessed ``older_than`` after their `new_order` was published: the task that
    event led to was lost on its way (Celery's Redis broker can drop a task in flight). The
    worker's per-order record keeps the processing step to one run if it was not lost after
    all. Returns how many."""
    async with uow:
        orders = await uow.orders.claim_unprocessed_announced_before(_now() - older_than, limit)
        if not orders:
            return 0
        for order in orders:
            await uow.outbox.add(_new_order_event(_read(order)), headers={})
        await uow.orders.clear_announced([order.id for order in orders])
        await uow.commit()
    ORDERS_REANNOUNCED.inc(len(orders))
    return len(orders)


async def _replay(uow: OrdersUnitOfWork, *, user_id: int, key: str, fingerprint: str) -> Created:
    stored = await uow.idempotency_keys.get(user_id, key)
    if stored is None:  # removed between the claim and this read (expired and cleaned up)
        raise Conflict("the Idempotency-Key expired meanwhile; send the request again")
    if stored.request_hash != fingerprint:
        raise InvalidInput(
            ("header", "Idempotency-Key"),
            "this Idempotency-Key was already used with a different request body; "
            "send a new key for a new order",
            "idempotency_key_reused",
        )
    order = await uow.orders.get_owned(stored.order_id, user_id)
    if order is None:
        raise _not_found()
    IDEMPOTENT_REPLAYS.inc()
    replayed = _read(order)
    return Created(replayed, order_json(replayed), replayed=True)


async def purge_expired_idempotency_keys(
    uow: OrdersUnitOfWork, *, now: datetime | None = None, batch: int = 1000
) -> int:
    """Delete the idempotency keys past their expiry, in bounded batches; return how many."""
    now = now or _now()
    total = 0
    while True:
        async with uow:
            deleted = await uow.idempotency_keys.delete_expired(now, batch)
            await uow.commit()
        total += deleted
        if deleted < batch:
            return total


@retry_on_disconnect
async def get_order(
    uow: OrdersUnitOfWork,
    cache: OrderCache,
    *,
    user_id: int,
    order_id: uuid.UUID,
    cached: CachedOrder | None,
) -> bytes:
    """The order's JSON body (``order_json``). ``cached`` is its cache entry, which the caller
    read together with the rate limit (one Redis round trip); None reads the database and
    fills the cache. The owner check applies to both."""
    if cached is not None:
        if cached.user_id != user_id:
            raise _not_found()
        return cached.body
    async with uow:
        order = await uow.orders.get_owned(order_id, user_id)
        if order is None:
            raise _not_found()
        found, version = _read(order), order.version
    return await cache.put(found, version)


@retry_on_disconnect
async def change_status(
    uow: OrdersUnitOfWork,
    cache: OrderCache,
    *,
    user_id: int,
    order_id: uuid.UUID,
    status: OrderStatus,
) -> bytes:
    """Move the order through the state machine. Setting the current status again changes
    nothing; a move the machine forbids is a 409 naming the moves it allows. Returns the
    order's body (``order_json``).

    BEGIN, the locking read, one statement for the UPDATE and its outbox row, COMMIT."""
    async with uow:
        # The row lock serialises concurrent changes of one order: each sees the last status.
        locked = await uow.orders.lock_owned(order_id, user_id)
        if locked is None:
            raise _not_found()
        order, version = locked
        current = order.status
        try:
            changed = transition(current, status)
        except IllegalTransition as exc:
            raise Conflict(str(exc)) from exc
        if changed:
            now = _now()
            event = envelope(
                EventType.ORDER_STATUS_CHANGED,
                OrderStatusChanged(
                    order_id=order.id,
                    user_id=order.user_id,
                    from_status=current,
                    to_status=status,
                    changed_at=now,
                ),
            )
            version = await uow.orders.update_status_announced(
                order.id,
                version=version,
                status=status,
                updated_at=now,
                event=uow.outbox.row(event),
            )
            await uow.commit()
            order = order.model_copy(update={"status": status, "updated_at": now})
            STATUS_CHANGES.labels(from_status=current.value, to_status=status.value).inc()
    return await cache.put(order, version)


@retry_on_disconnect
async def mark_processed_many(
    uow: OrdersUnitOfWork, cache: OrderCache, *, reports: Mapping[uuid.UUID, datetime]
) -> dict[uuid.UUID, Processed]:
    """Record that the worker processed these orders (order id -> its ``processed_at``), in one
    transaction: one locking SELECT and one UPDATE for all of them. An order missing from the
    answer does not exist.

    Idempotent: only the first report sets ``processed_at``; a repeated one (the bus delivers
    at least once, the worker may report twice) changes nothing, not even the version. The
    cache is refreshed either way, in one round trip, so a lost refresh is repaired by the next
    delivery."""
    async with uow:
        # The row locks order this against a concurrent PATCH or a concurrent duplicate.
        orders = await uow.orders.lock_many(sorted(reports))
        todo = {order.id: reports[order.id] for order in orders if order.processed_at is None}
        if todo:
            # updated_at stays: it tells the last status change, and processing is none.
            await uow.orders.set_processed(todo)
            await uow.commit()
        outcomes: dict[uuid.UUID, Processed] = {}
        entries: list[tuple[OrderRead, int]] = []
        for order in orders:
            result, version = _read(order), order.version
            if order.id in todo:  # what the UPDATE wrote (the ORM object was left as read)
                result = result.model_copy(update={"processed_at": todo[order.id]})
                version += 1
            outcomes[order.id] = Processed(result, changed=order.id in todo)
            entries.append((result, version))
    await cache.put_many(entries)
    return outcomes


@retry_on_disconnect
async def list_user_orders(
    uow: OrdersUnitOfWork,
    *,
    requester_id: int,
    user_id: int,
    limit: int,
    cursor: Cursor | None = None,
) -> OrderPage:
    """A page of the user's orders, newest first, and the cursor of the next page if any."""
    if requester_id != user_id:
        raise Forbidden("you can only list your own orders")
    async with uow:
        # One row more than asked tells whether another page follows.
        rows = await uow.orders.list_for_user(
            user_id, limit=limit + 1, before=cursor.position if cursor else None
        )
        orders = [_read(order) for order in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = orders[-1]
        next_cursor = Cursor(created_at=last.created_at, id=last.id)
    return OrderPage(orders=orders, next_cursor=next_cursor)
