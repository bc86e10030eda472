"""A subscriber counts each message by result on ``bus_events_consumed_total`` (real RabbitMQ,
the test's own exchange and queues)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import REGISTRY

from order_common.bus import (
    Delivery,
    Handled,
    RejectMessage,
    RetryPolicy,
    Subscriber,
    Topology,
    connect,
    declare_exchange,
    delete_exchanges,
    delete_subscription,
    publish_envelope,
)
from order_common.events import EventType, NewOrder, envelope
from order_common.orders import OrderItem, OrderStatus

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect(AMQP_URL, name="order-common-metrics-tests")
    yield connection
    await connection.close()


@pytest.fixture
async def topology(amqp: AbstractRobustConnection) -> AsyncIterator[Topology]:
    run = uuid.uuid4().hex[:10]
    topology = Topology(exchange=f"test-{run}.events", queue_prefix=f"test-{run}")
    yield topology
    channel = await amqp.channel()
    await delete_subscription(channel, topology, f"metrics-{run}", EventType.NEW_ORDER)
    await delete_exchanges(channel, topology)
    await channel.close()


def consumed(subscriber: str, result: str) -> float:
    labels = {"subscriber": subscriber, "event_type": "new_order", "result": result}
    return REGISTRY.get_sample_value("bus_events_consumed_total", labels) or 0.0


async def test_each_message_is_counted_by_its_result(
    amqp: AbstractRobustConnection, topology: Topology
) -> None:
    name = f"metrics-{topology.queue_prefix.removeprefix('test-')}"
    outcomes: dict[uuid.UUID, str] = {}

    async def handler(delivery: Delivery) -> Handled | None:
        match outcomes[delivery.envelope.event_id]:
            case "duplicate":
                return Handled.DUPLICATE
            case "reject":
                raise RejectMessage("never valid")
            case "fail":
                raise RuntimeError("always down")
        return None

    subscriber = Subscriber(
        amqp,
        topology,
        name,
        EventType.NEW_ORDER,
        handler,
        retry=RetryPolicy(max_attempts=2, base_delay=0.1, max_delay=0.1),
    )
    await subscriber.start()
    try:
        assert consumed(name, "ok") == 0  # the series exist before the first message
        channel = await amqp.channel()
        exchange = await declare_exchange(channel, topology)
        for outcome in ("ok", "duplicate", "reject", "fail"):
            event = envelope(
                EventType.NEW_ORDER,
                NewOrder(
                    order_id=uuid.uuid4(),
                    user_id=1,
                    items=[OrderItem(name="Pen", quantity=1, price="1.00")],  # type: ignore[arg-type]
                    total_price="1.00",  # type: ignore[arg-type]
                    status=OrderStatus.PENDING,
                    created_at=datetime.now(UTC),
                ),
            )
            outcomes[event.event_id] = outcome
            await publish_envelope(exchange, event)
        await channel.close()
        expected = {"ok": 1, "duplicate": 1, "retried": 1, "dead_lettered": 2}
        deadline = time.monotonic() + 10
        while {result: consumed(name, result) for result in expected} != expected:
            assert time.monotonic() < deadline, {r: consumed(name, r) for r in expected}
            await asyncio.sleep(0.05)
    finally:
        await subscriber.stop()
    duration = REGISTRY.get_sample_value(
        "bus_event_handling_seconds_count", {"subscriber": name, "event_type": "new_order"}
    )
    assert duration == 5  # every run of the handler, the retried one twice
