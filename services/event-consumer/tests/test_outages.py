"""An unreachable Celery broker is an outage to wait out, not a reason to dead-letter: the
consumer pauses with back-off and sends the tasks once Redis answers again."""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractRobustConnection
from order_testing import TcpProxy
from pydantic import SecretStr

from event_consumer.main import run
from event_consumer.settings import Settings
from order_common.bus import dead_letter_queue_name, declare_exchange, publish_envelope
from order_common.dlq import count_messages

from .helpers import celery_tasks, consumers, eventually, new_order_event, paused, sent_orders


async def test_orders_wait_for_an_unreachable_celery_broker_and_none_is_dead_lettered(
    settings: Settings, amqp: AbstractRobustConnection
) -> None:
    # Celery's broker behind a proxy whose port is closed: the real Redis keeps running.
    proxy = await TcpProxy(6379).start(closed=True)
    direct = settings  # reads the Celery queue from Redis itself
    settings = settings.model_copy(
        update={
            "celery_broker_url": SecretStr(proxy.url("redis://127.0.0.1:{port}/1")),
            # Spent attempts would dead-letter after two failed runs, within a second or two.
            "bus_max_attempts": 2,
        }
    )
    stop = asyncio.Event()
    running = asyncio.create_task(run(settings, stop))
    channel = await amqp.channel()
    try:
        queue = settings.bus_topology().queue_name("event-consumer", "new_order")

        async def consuming() -> bool:
            return await consumers(amqp, queue) > 0

        await eventually(consuming)
        exchange = await declare_exchange(channel, settings.bus_topology())
        events = [new_order_event() for _ in range(3)]
        for event in events:
            await publish_envelope(exchange, event)

        await asyncio.sleep(6)  # several rounds of sends against the closed port
        dlq = dead_letter_queue_name(
            settings.bus_topology().queue_name("event-consumer", "new_order")
        )
        assert await count_messages(channel, dlq) == 0
        assert await celery_tasks(direct) == []
        assert paused()

        await proxy.open()  # Redis is reachable again

        async def all_sent() -> bool:
            return len(await sent_orders(direct)) == 3

        await eventually(all_sent, timeout=30)
        await eventually(lambda: not paused())
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)
        await proxy.close()

    orders = await sent_orders(direct)
    assert sorted(o["event_id"] for o in orders) == sorted(str(e.event_id) for e in events)
    assert await count_messages(channel, dlq) == 0
    await channel.close()
