from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractQueue, AbstractRobustConnection

from order_common.bus import QUORUM_QUEUE_ARGUMENTS, connect, declare_exchange, delete_exchanges
from order_common.events import EventType
from order_worker.settings import Settings

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(scope="module")
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect(AMQP_URL, name="worker-tests")
    yield connection
    await connection.close()


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    """This test's own exchange, Redis keys and Celery key prefix; all removed after."""
    run = uuid.uuid4().hex[:10]
    settings = Settings(
        environment="test",
        amqp_url=AMQP_URL,
        bus_exchange=f"test-{run}.events",
        bus_queue_prefix=f"test-{run}",
        redis_key_prefix=f"test:{run}:worker",
        celery_key_prefix=f"test:{run}:celery:",
        processing_delay_seconds=0,
    )
    yield settings
    for url, prefix in (
        (settings.redis_url, settings.redis_key_prefix),
        (settings.celery_broker_url, settings.celery_key_prefix),
    ):
        client = aioredis.Redis.from_url(url)
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()


@pytest.fixture
async def processed_queue(
    settings: Settings, amqp: AbstractRobustConnection
) -> AsyncIterator[AbstractQueue]:
    """A queue bound to the test's exchange for `order_processed`: what the orders service
    would receive."""
    channel = await amqp.channel()
    topology = settings.bus_topology()
    exchange = await declare_exchange(channel, topology)
    queue = await channel.declare_queue(
        f"{topology.queue_prefix}.observer.order_processed",
        durable=True,
        arguments=QUORUM_QUEUE_ARGUMENTS,
    )
    await queue.bind(exchange, routing_key=EventType.ORDER_PROCESSED.value)
    yield queue
    await channel.queue_delete(queue.name, if_unused=False, if_empty=False)
    await delete_exchanges(channel, topology)
    await channel.close()
