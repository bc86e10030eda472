"""A subscriber counts each message by result on ``bus_events_consumed_total`` (real RabbitMQ,
the test's own exchange and queues)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractRobustConnection
from order_testing import (
    AMQP_URL,
    amqp_connection,
    delete_topology,
    new_order_event,
    run_id,
    run_topology,
)
from prometheus_client import REGISTRY

from order_common.aio import RetryPolicy
from order_common.bus import (
    RejectMessage,
    Topology,
    declare_exchange,
    publish_envelope,
)
from order_common.delivery import Delivery, Handled
from order_common.events import EventType
from order_common.subscriber import Subscriber


@pytest.fixture
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    async with amqp_connection(AMQP_URL, name="order-common-metrics-tests") as connection:
        yield connection


@pytest.fixture
async def topology(amqp: AbstractRobustConnection) -> AsyncIterator[Topology]:
    run = run_id()
    topology = run_topology(run)
    yield topology
    await delete_topology(amqp, topology, [(f"metrics-{run}", EventType.NEW_ORDER)])


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
            event = new_order_event(name="Pen", price="1.00")
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
