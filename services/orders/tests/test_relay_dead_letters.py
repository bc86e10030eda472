"""A poison outbox row -- one that can never be published -- against the real PostgreSQL and
RabbitMQ: it is retried alone, costs attempts only for its own failures, is dead-lettered
after ``relay_max_attempts`` of them (shown and re-drivable by ``orders-service dlq``), and
never holds the other events back."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aio_pika.abc import AbstractRobustConnection
from order_testing import eventually
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from order_common.bus import declare_exchange
from order_common.db import build_session_factory
from order_common.events import EventType, OrderProcessed, envelope
from orders_service import outbox_dlq
from orders_service.cli import main as cli_main
from orders_service.outbox_publisher import BatchResult, OutboxPublisher
from orders_service.settings import Settings
from orders_service.uow import OrdersUnitOfWork

from .conftest import add_outbox_events, published_events, running_relay

MakeSettings = Callable[..., Settings]


async def add_poison_row(relay_db: AsyncEngine) -> str:
    """An outbox row whose payload is not an envelope (a bad deploy, a hand-made row): it can
    never be made into a message. The oldest of the outbox, so every batch claims it first."""
    event_id = str(uuid.uuid4())
    async with relay_db.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox_events (id, event_type, payload, created_at) "
                "VALUES (:id, 'new_order', CAST(:payload AS jsonb), :created)"
            ),
            {
                "id": event_id,
                "payload": json.dumps({"event_type": "new_order", "data": "not an order"}),
                "created": datetime.now(UTC) - timedelta(hours=1),
            },
        )
    return event_id


async def row(relay_db: AsyncEngine, event_id: str) -> dict[str, Any]:
    async with relay_db.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT published_at, attempts, last_error, dead_lettered_at FROM outbox_events "
                "WHERE id = :id"
            ),
            {"id": event_id},
        )
        return dict(result.one()._mapping)


async def test_a_poison_row_is_dead_lettered_after_its_attempts_and_the_others_go_out(
    relay_settings: MakeSettings,
    relay_db: AsyncEngine,
    amqp: AbstractRobustConnection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = relay_settings()
    poison = await add_poison_row(relay_db)
    good = await add_outbox_events(relay_db, 5, notify=True)
    session_factory = build_session_factory(relay_db)
    caplog.set_level(logging.WARNING, logger="orders_service.outbox_publisher")
    async with published_events(amqp, settings) as seen:
        channel = await amqp.channel()
        exchange = await declare_exchange(channel, settings.bus_topology())
        publisher = OutboxPublisher(session_factory, exchange, batch_size=10, max_attempts=3)

        # The good events go out with the first batch; only the poison row is retried.
        assert await publisher.publish_batch() == BatchResult(claimed=6, published=5, failed=1)
        first = await row(relay_db, poison)
        assert (first["published_at"], first["attempts"]) == (None, 1)
        assert "ValidationError" in first["last_error"]
        assert first["dead_lettered_at"] is None
        assert await publisher.publish_batch() == BatchResult(claimed=1, published=0, failed=1)
        assert await publisher.publish_batch() == BatchResult(
            claimed=1, published=0, failed=1, dead_lettered=1
        )
        # Set aside: no later batch claims it, newer events go out alone.
        assert await publisher.publish_batch() == BatchResult()
        later = await add_outbox_events(relay_db, 2, notify=True)
        assert await publisher.publish_batch() == BatchResult(claimed=2, published=2)
        await eventually(lambda: len(seen) == 7)
        await channel.close()

    assert Counter(seen) == Counter(good + later)
    dead = await row(relay_db, poison)
    assert dead["attempts"] == 3
    assert dead["dead_lettered_at"] is not None
    logged = [r for r in caplog.records if "dead-lettered" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].levelno == logging.ERROR
    assert poison in logged[0].getMessage()
    assert "ValidationError" in logged[0].getMessage()

    # Visible, with its reason, and re-drivable.
    total, entries = await outbox_dlq.show(session_factory)
    assert total == 1
    assert [(e["event_id"], e["attempts"]) for e in entries] == [(poison, 3)]
    assert "ValidationError" in entries[0]["last_error"]
    assert await outbox_dlq.redrive(session_factory) == 1
    back = await row(relay_db, poison)
    assert (back["attempts"], back["dead_lettered_at"]) == (0, None)
    assert await publisher.publish_batch() == BatchResult(claimed=1, published=0, failed=1)
    assert await outbox_dlq.show(session_factory) == (0, [])


async def test_orders_service_dlq_shows_and_redrives_the_outbox_dead_letters(
    relay_settings: MakeSettings,
    relay_database_url: str,
    relay_db: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    relay_settings()  # empties the outbox
    poison = await add_poison_row(relay_db)
    async with relay_db.begin() as conn:
        await conn.execute(
            text(
                "UPDATE outbox_events SET attempts = 10, last_error = 'DeliveryError: nacked', "
                "dead_lettered_at = now() WHERE id = :id"
            ),
            {"id": poison},
        )
    monkeypatch.setenv("ORDERS_DATABASE_URL", relay_database_url)
    monkeypatch.setenv("ORDERS_ENVIRONMENT", "test")

    await asyncio.to_thread(cli_main, ["dlq", "show"])
    header, entry = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert header == {"queue": "outbox", "dead_letters": 1}
    assert (entry["event_id"], entry["last_error"]) == (poison, "DeliveryError: nacked")

    await asyncio.to_thread(cli_main, ["dlq", "redrive", "--id", poison])
    assert json.loads(capsys.readouterr().out) == {"queue": "outbox", "redriven": 1}
    assert (await row(relay_db, poison))["dead_lettered_at"] is None


async def test_a_poison_row_does_not_slow_the_relay_for_the_other_events(
    relay_settings: MakeSettings, relay_db: AsyncEngine, amqp: AbstractRobustConnection
) -> None:
    """With a row failing in every batch (never dead-lettered here), each new event still goes
    out as soon as its NOTIFY wakes the relay: a failure of one row backs off nobody."""
    settings = relay_settings(relay_poll_interval_seconds=0.3, relay_max_attempts=1000)
    poison = await add_poison_row(relay_db)
    async with published_events(amqp, settings) as seen, running_relay(settings) as process:
        await asyncio.wait_for(process.started.wait(), timeout=10)
        assert process.relay is not None
        await asyncio.wait_for(process.relay.listening.wait(), timeout=10)
        for _ in range(3):
            # Meanwhile polls find the poison row alone, and fail: a relay that backed off
            # for it would be 4 s into a pause by now (0.5 + 1 + 2 s before).
            await asyncio.sleep(4.0)
            [event_id] = await add_outbox_events(relay_db, 1, notify=True)
            await eventually(lambda event_id=event_id: event_id in seen, timeout=2)
    poisoned = await row(relay_db, poison)
    assert poisoned["published_at"] is None
    assert poisoned["attempts"] >= 12  # in batches alone and with each event, failed each time


async def test_a_queue_that_nacks_everything_is_an_outage_not_a_poison_row(
    relay_settings: MakeSettings, relay_db: AsyncEngine, amqp: AbstractRobustConnection
) -> None:
    """One event type goes to a queue that rejects every publish (the broker nacks it: a
    quorum queue without its quorum, an overflow policy) while the others are confirmed: the
    nacked rows spend no attempt, however many batches they go with, and are never
    dead-lettered; they go out once the queue takes messages again."""
    settings = relay_settings()
    session_factory = build_session_factory(relay_db)
    refused = envelope(
        EventType.ORDER_PROCESSED,
        OrderProcessed(order_id=uuid.uuid4(), processed_at=datetime.now(UTC)),
    )
    async with OrdersUnitOfWork(session_factory) as uow:
        await uow.outbox.add(refused)
        await uow.commit()
    await add_outbox_events(relay_db, 2, notify=True)
    channel = await amqp.channel()
    exchange = await declare_exchange(channel, settings.bus_topology())
    full = await channel.declare_queue(
        f"{settings.bus_queue_prefix}.full",
        auto_delete=True,
        arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
    )
    await full.bind(exchange, routing_key=EventType.ORDER_PROCESSED.value)
    publisher = OutboxPublisher(session_factory, exchange, batch_size=10, max_attempts=2)
    try:
        assert await publisher.publish_batch() == BatchResult(
            claimed=3, published=2, failed=1, outage=1
        )
        for _ in range(3):  # with other events each time, past max_attempts
            await add_outbox_events(relay_db, 1, notify=True)
            assert await publisher.publish_batch() == BatchResult(
                claimed=2, published=1, failed=1, outage=1
            )
        kept = await row(relay_db, str(refused.event_id))
        assert (kept["attempts"], kept["dead_lettered_at"], kept["published_at"]) == (0, None, None)
        await full.unbind(exchange, routing_key=EventType.ORDER_PROCESSED.value)
        assert await publisher.publish_batch() == BatchResult(claimed=1, published=1)
        assert (await row(relay_db, str(refused.event_id)))["published_at"] is not None
    finally:
        await full.delete(if_unused=False, if_empty=False)
        await channel.close()
