from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection

from event_consumer.consumer import SUBSCRIBER
from event_consumer.settings import Settings
from order_common.bus import connect, delete_exchanges, delete_subscription
from order_common.events import EventType

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture(scope="module")
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    connection = await connect(AMQP_URL, name="event-consumer-tests")
    yield connection
    await connection.close()


@pytest.fixture
async def settings(amqp: AbstractRobustConnection) -> AsyncIterator[Settings]:
    """This test's own exchange, queues, Redis keys and Celery key prefix; all removed after."""
    run = uuid.uuid4().hex[:10]
    settings = Settings(
        environment="test",
        amqp_url=AMQP_URL,
        bus_exchange=f"test-{run}.events",
        bus_queue_prefix=f"test-{run}",
        bus_retry_base_delay_seconds=0.2,
        redis_key_prefix=f"test:{run}:consumer",
        celery_key_prefix=f"test:{run}:celery:",
        dedup_claim_ttl_seconds=5,
    )
    yield settings

    channel = await amqp.channel()
    await delete_subscription(channel, settings.bus_topology(), SUBSCRIBER, EventType.NEW_ORDER)
    await delete_exchanges(channel, settings.bus_topology())
    await channel.close()
    for url, prefix in (
        (settings.redis_url, settings.redis_key_prefix),
        (settings.celery_broker_url, settings.celery_key_prefix),
    ):
        client = aioredis.Redis.from_url(url)
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()
