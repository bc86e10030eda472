"""`order_processed` comes back to the order: `processed_at` is set once, whatever the bus
repeats, and the cache follows."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aio_pika.abc import AbstractRobustConnection
from fastapi import FastAPI
from httpx import AsyncClient
from order_testing import TcpProxy, eventually
from prometheus_client import REGISTRY
from redis import Redis
from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from order_common.bus import (
    dead_letter_queue_name,
    declare_exchange,
    declare_subscription,
    publish_envelope,
)
from order_common.dlq import count_messages, peek
from order_common.events import Envelope, EventType, OrderProcessed, envelope
from orders_service import service
from orders_service.events import EventsProcess
from orders_service.order_processed import SUBSCRIBER
from orders_service.settings import Settings
from orders_service.uow import OrdersUnitOfWork

from .conftest import VALID_ORDER, User, running_relay

PlaceOrder = Callable[..., Awaitable[dict[str, Any]]]


def processed(order_id: uuid.UUID | str, at: datetime) -> Envelope[Any]:
    return envelope(
        EventType.ORDER_PROCESSED,
        OrderProcessed(order_id=uuid.UUID(str(order_id)), processed_at=at),
    )


async def version_of(engine: AsyncEngine, order_id: str) -> int:
    async with engine.connect() as conn:
        version: int = await conn.scalar(
            text("SELECT version FROM orders WHERE id = :id"), {"id": order_id}
        )
    return version


async def test_mark_processed_sets_processed_at_once_and_refreshes_the_cache(
    app: FastAPI,
    client: AsyncClient,
    db: AsyncEngine,
    redis_client: Redis,
    user: User,
    place_order: PlaceOrder,
) -> None:
    order = await place_order(user)
    await client.get(f"/orders/{order['id']}/", headers=user.headers)  # now cached
    cache = app.state.cache
    first_at = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    async def mark(at: datetime) -> service.Processed:
        order_id = uuid.UUID(order["id"])
        outcomes = await service.mark_processed_many(
            OrdersUnitOfWork(app.state.session_factory), cache, reports={order_id: at}
        )
        return outcomes[order_id]

    first = await mark(first_at)
    assert first.changed
    assert first.order.processed_at == first_at
    assert await version_of(db, order["id"]) == 2

    # The cache lost its entry; a repeated report changes nothing but puts it back.
    redis_client.delete(cache.key(first.order.id))
    again = await mark(first_at + timedelta(minutes=5))
    assert not again.changed
    assert again.order.processed_at == first_at
    assert await version_of(db, order["id"]) == 2
    entry = await cache.get_entry(first.order.id)
    assert entry is not None
    assert entry.version == 2
    assert datetime.fromisoformat(json.loads(entry.body)["processed_at"]) == first_at

    fetched = (await client.get(f"/orders/{order['id']}/", headers=user.headers)).json()
    assert datetime.fromisoformat(fetched["processed_at"]) == first_at
    assert fetched["status"] == "PENDING"


async def test_an_unknown_order_is_missing_from_the_outcomes(app: FastAPI) -> None:
    unknown = uuid.uuid4()
    outcomes = await service.mark_processed_many(
        OrdersUnitOfWork(app.state.session_factory),
        app.state.cache,
        reports={unknown: datetime.now(UTC)},
    )
    assert unknown not in outcomes


def _consumed(result: str) -> float:
    labels = {"subscriber": SUBSCRIBER, "event_type": "order_processed", "result": result}
    return REGISTRY.get_sample_value("bus_events_consumed_total", labels) or 0.0


def _paused() -> bool:
    labels = {"subscriber": SUBSCRIBER, "event_type": "order_processed"}
    return (REGISTRY.get_sample_value("bus_consumer_paused", labels) or 0.0) == 1.0


async def _started(process: EventsProcess) -> None:
    await asyncio.wait_for(process.started.wait(), timeout=30)


async def test_duplicate_order_processed_deliveries_set_processed_at_once(
    relay_settings: Callable[..., Settings],
    relay_database_url: str,
    relay_db: AsyncEngine,
    amqp: AbstractRobustConnection,
    start_app: Any,
    user: User,
) -> None:
    settings = relay_settings()
    channel = await amqp.channel()
    exchange = await declare_exchange(channel, settings.bus_topology())
    ok, duplicates = _consumed("ok"), _consumed("duplicate")

    async with (
        start_app(database_url=relay_database_url) as (_, client),
        running_relay(settings) as process,
    ):
        await _started(process)
        created = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        order_id = created.json()["id"]
        await client.get(f"/orders/{order_id}/", headers=user.headers)  # cached, unprocessed

        first_at = datetime.now(UTC)
        first = processed(order_id, first_at)
        await publish_envelope(exchange, first)
        await eventually(lambda: _consumed("ok") == ok + 1)

        # The same event again (a redelivery) and a second report (a repeated task).
        await publish_envelope(exchange, first)
        await publish_envelope(exchange, processed(order_id, first_at + timedelta(seconds=30)))
        await eventually(lambda: _consumed("duplicate") == duplicates + 2)

        fetched = (await client.get(f"/orders/{order_id}/", headers=user.headers)).json()

    await channel.close()
    assert datetime.fromisoformat(fetched["processed_at"]) == first_at
    assert await version_of(relay_db, order_id) == 2
    assert _consumed("ok") == ok + 1


async def test_order_processed_for_an_unknown_order_is_dead_lettered(
    relay_settings: Callable[..., Settings],
    amqp: AbstractRobustConnection,
) -> None:
    settings = relay_settings()
    channel = await amqp.channel()
    exchange = await declare_exchange(channel, settings.bus_topology())
    dlq = dead_letter_queue_name(
        settings.bus_topology().queue_name(SUBSCRIBER, EventType.ORDER_PROCESSED)
    )

    async with running_relay(settings) as process:
        await _started(process)
        await publish_envelope(exchange, processed(uuid.uuid4(), datetime.now(UTC)))

        async def dead_lettered() -> bool:
            return await count_messages(channel, dlq) == 1

        await eventually(dead_lettered)

    [letter] = await peek(amqp, dlq, limit=1)
    await channel.close()
    assert letter.reason == "rejected"
    assert letter.error is not None
    assert "no order" in letter.error


async def test_order_processed_waits_for_an_unreachable_database_and_is_never_dead_lettered(
    relay_settings: Callable[..., Settings],
    relay_database_url: str,
    relay_db: AsyncEngine,
    amqp: AbstractRobustConnection,
    start_app: Any,
    user: User,
) -> None:
    # The relay reaches PostgreSQL through a proxy; the shared server itself keeps running.
    proxy = await TcpProxy(5432).start()
    url = make_url(relay_database_url).set(port=proxy.port).render_as_string(False)
    # Spent attempts would dead-letter after two failed runs, within a second.
    settings = relay_settings(database_url=url, bus_max_attempts=2)
    channel = await amqp.channel()
    exchange = await declare_exchange(channel, settings.bus_topology())
    dlq = dead_letter_queue_name(
        settings.bus_topology().queue_name(SUBSCRIBER, EventType.ORDER_PROCESSED)
    )
    try:
        async with (
            start_app(database_url=relay_database_url) as (_, client),
            running_relay(settings) as process,
        ):
            await _started(process)
            ok = _consumed("ok")
            created = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
            order_id = created.json()["id"]

            await proxy.close()  # PostgreSQL unreachable for the relay
            at = datetime.now(UTC)
            await publish_envelope(exchange, processed(order_id, at))
            await asyncio.sleep(5)
            assert await count_messages(channel, dlq) == 0
            assert _paused()

            await proxy.open()
            await eventually(lambda: _consumed("ok") == ok + 1, timeout=30)
            assert not _paused()
            fetched = (await client.get(f"/orders/{order_id}/", headers=user.headers)).json()
    finally:
        await proxy.close()
    assert datetime.fromisoformat(fetched["processed_at"]) == at
    assert await count_messages(channel, dlq) == 0
    await channel.close()


async def test_a_backlog_of_reports_is_applied_in_batches_each_order_once(
    relay_settings: Callable[..., Settings],
    relay_database_url: str,
    relay_db: AsyncEngine,
    amqp: AbstractRobustConnection,
    start_app: Any,
    user: User,
) -> None:
    """Thirty orders, each reported three times (the first report, the same event again, and a
    second report of the task), plus a report of an order that does not exist, all waiting in
    the queue: they are applied a batch per transaction, each order exactly once, with the
    first report's time; the duplicates change nothing and the unknown one is dead-lettered."""
    settings = relay_settings()
    topology = settings.bus_topology()
    channel = await amqp.channel()
    exchange = await declare_exchange(channel, topology)
    # The queue exists before the process starts, so the reports wait in it together.
    await declare_subscription(channel, topology, SUBSCRIBER, EventType.ORDER_PROCESSED)
    dlq = dead_letter_queue_name(topology.queue_name(SUBSCRIBER, EventType.ORDER_PROCESSED))
    async with start_app(database_url=relay_database_url) as (_, client):
        created = [
            await client.post("/orders/", json=VALID_ORDER, headers=user.headers) for _ in range(30)
        ]
    order_ids = [response.json()["id"] for response in created]
    first_at = datetime.now(UTC)
    reports = []
    for order_id in order_ids:
        first = processed(order_id, first_at)
        reports += [first, first, processed(order_id, first_at + timedelta(seconds=30))]
    reports.append(processed(uuid.uuid4(), first_at))
    await asyncio.gather(*(publish_envelope(exchange, report) for report in reports))

    updates: list[str] = []

    def count_updates(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE orders"):
            updates.append(statement)

    before = {result: _consumed(result) for result in ("ok", "duplicate", "dead_lettered")}
    event.listen(Engine, "before_cursor_execute", count_updates)
    try:
        async with running_relay(settings):
            await eventually(
                lambda: (
                    _consumed("ok") + _consumed("duplicate") + _consumed("dead_lettered")
                    == sum(before.values()) + len(reports)
                ),
                timeout=20,
            )
    finally:
        event.remove(Engine, "before_cursor_execute", count_updates)

    assert _consumed("ok") == before["ok"] + 30
    assert _consumed("duplicate") == before["duplicate"] + 60
    assert _consumed("dead_lettered") == before["dead_lettered"] + 1
    assert 1 <= len(updates) <= 10, f"{len(updates)} UPDATEs for 30 orders: not batched"
    async with relay_db.connect() as conn:
        rows = (
            await conn.execute(
                text("SELECT processed_at, version FROM orders WHERE id = ANY(:ids)"),
                {"ids": [uuid.UUID(order_id) for order_id in order_ids]},
            )
        ).all()
    assert len(rows) == 30
    assert {(row.processed_at, row.version) for row in rows} == {(first_at, 2)}
    assert await count_messages(channel, dlq) == 1
    assert (
        await count_messages(channel, topology.queue_name(SUBSCRIBER, EventType.ORDER_PROCESSED))
        == 0
    )
    await channel.close()
