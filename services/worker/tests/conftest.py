from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection
from order_testing import (
    AMQP_URL,
    amqp_connection,
    delete_redis_keys,
    run_bus_settings,
    run_id,
)

from order_common.bus import QUORUM_QUEUE_ARGUMENTS, declare_exchange, delete_exchanges
from order_common.events import EventType
from order_worker.settings import Settings


@pytest.fixture(scope="module")
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    async with amqp_connection(AMQP_URL, name="worker-tests") as connection:
        yield connection


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    """This test's own exchange, Redis keys and Celery key prefix; all removed after."""
    run = run_id()
    settings = Settings(
        environment="test",
        amqp_url=AMQP_URL,
        **run_bus_settings(run),
        redis_key_prefix=f"test:{run}:worker",
        celery_key_prefix=f"test:{run}:celery:",
        processing_delay_seconds=0,
    )
    yield settings
    await delete_redis_keys(settings.redis_url.get_secret_value(), settings.redis_key_prefix)
    await delete_redis_keys(
        settings.celery_broker_url.get_secret_value(), settings.celery_key_prefix
    )


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
