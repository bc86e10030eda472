"""The consumer against real RabbitMQ and Redis; the Celery queue is read back from Redis."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection

from event_consumer.consumer import SUBSCRIBER, NewOrderHandler, create_celery_producer
from event_consumer.main import run
from event_consumer.settings import Settings
from order_common.bus import (
    dead_letter_queue_name,
    declare_exchange,
    declare_subscription,
    publish_envelope,
)
from order_common.cache import build_redis
from order_common.delivery import Delivery, Outcome
from order_common.dlq import count_messages, peek
from order_common.events import EventType
from order_common.subscriber import Subscriber
from order_common.tasks import PROCESS_ORDERS_TASK

from .helpers import celery_tasks, consumers, eventually, handled, new_order_event, sent_orders


@pytest.fixture
async def consumer(
    settings: Settings, amqp: AbstractRobustConnection, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[None]:
    """The consumer running in this event loop until the test ends, once RabbitMQ counts it
    as a consumer of its queue."""
    caplog.set_level(logging.INFO)
    stop = asyncio.Event()
    running = asyncio.create_task(run(settings, stop))
    queue = settings.bus_topology().queue_name(SUBSCRIBER, "new_order")

    async def consuming() -> bool:
        return running.done() or await consumers(amqp, queue) > 0

    await eventually(consuming)
    if running.done():
        running.result()  # raise its start-up error
    yield
    stop.set()
    await asyncio.wait_for(running, 30)


@pytest.mark.usefixtures("consumer")
async def test_duplicate_deliveries_of_an_event_send_exactly_one_task(
    settings: Settings, amqp: AbstractRobustConnection
) -> None:
    channel = await amqp.channel()
    exchange = await declare_exchange(channel, settings.bus_topology())
    event = new_order_event()

    # Five copies at once (the outbox relay retried, RabbitMQ redelivered), one much later.
    ok, duplicates = handled("ok"), handled("duplicate")
    await asyncio.gather(*(publish_envelope(exchange, event) for _ in range(5)))
    await eventually(lambda: handled("duplicate") - duplicates == 4)
    await publish_envelope(exchange, event)
    await eventually(lambda: handled("duplicate") - duplicates == 5)
    assert handled("ok") - ok == 1
    await channel.close()

    [task] = await celery_tasks(settings)
    assert task["task"] == PROCESS_ORDERS_TASK
    assert await sent_orders(settings) == [
        {"order_id": str(event.data.order_id), "event_id": str(event.event_id)}
    ]


@pytest.mark.usefixtures("consumer")
async def test_a_malformed_message_is_dead_lettered_and_the_consumer_keeps_going(
    settings: Settings, amqp: AbstractRobustConnection
) -> None:
    channel = await amqp.channel()
    exchange = await declare_exchange(channel, settings.bus_topology())
    await exchange.publish(
        aio_pika.Message(b'{"event_type": "new_order", "data": {}}'), routing_key="new_order"
    )
    event = new_order_event()
    await publish_envelope(exchange, event)

    async def one_task() -> bool:
        return len(await sent_orders(settings)) == 1

    await eventually(one_task)
    dlq = dead_letter_queue_name(settings.bus_topology().queue_name(SUBSCRIBER, "new_order"))
    [letter] = await peek(amqp, dlq)
    assert letter.reason == "poison"
    assert letter.original_routing_key == "new_order"
    [order] = await sent_orders(settings)
    assert order["order_id"] == str(event.data.order_id)
    assert await count_messages(channel, dlq) == 1
    await channel.close()


async def test_a_backlog_is_handled_in_batches_and_sends_one_task_per_event_id(
    settings: Settings, amqp: AbstractRobustConnection
) -> None:
    """Forty events, each delivered twice, waiting in the queue: they are handled a batch at a
    time (one claim round trip, one thread hop of sends, one mark round trip per batch) and
    every event id sends exactly one task; the copies are duplicates."""
    channel = await amqp.channel()
    topology = settings.bus_topology()
    exchange = await declare_exchange(channel, topology)
    await declare_subscription(channel, topology, SUBSCRIBER, EventType.NEW_ORDER)
    events = [new_order_event() for _ in range(40)]
    await asyncio.gather(*(publish_envelope(exchange, e) for e in events for _ in range(2)))

    redis = build_redis(settings.redis_url.get_secret_value(), settings.redis_timeout_seconds)
    celery = create_celery_producer(settings)
    handler = NewOrderHandler(settings, redis, celery)
    batches: list[int] = []

    async def counting(deliveries: Sequence[Delivery]) -> Sequence[Outcome]:
        batches.append(len(deliveries))
        return await handler(deliveries)

    before = {result: handled(result) for result in ("ok", "duplicate")}
    subscriber = Subscriber(
        amqp,
        topology,
        SUBSCRIBER,
        EventType.NEW_ORDER,
        batch_handler=counting,
        retry=settings.bus_retry_policy(),
        prefetch=settings.prefetch,
    )
    await subscriber.start()
    try:
        await eventually(lambda: sum(batches) >= 80)
    finally:
        await subscriber.stop()
        await redis.aclose()
        await asyncio.to_thread(celery.close)
        await channel.close()

    orders = await sent_orders(settings)
    assert sorted(o["event_id"] for o in orders) == sorted(str(e.event_id) for e in events)
    # A batch of events is sent as batch tasks: fewer tasks than orders.
    assert len(await celery_tasks(settings)) < len(events)
    assert handled("ok") == before["ok"] + 40
    assert handled("duplicate") == before["duplicate"] + 40
    assert max(batches) > 1, batches
    assert len(batches) < 80
