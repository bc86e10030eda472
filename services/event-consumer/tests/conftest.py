from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aio_pika.abc import AbstractRobustConnection
from order_testing import (
    AMQP_URL,
    amqp_connection,
    delete_redis_keys,
    delete_topology,
    run_bus_settings,
    run_id,
)

from event_consumer.consumer import SUBSCRIBER
from event_consumer.settings import Settings
from order_common.events import EventType


@pytest.fixture(scope="module")
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    async with amqp_connection(AMQP_URL, name="event-consumer-tests") as connection:
        yield connection


@pytest.fixture
async def settings(amqp: AbstractRobustConnection) -> AsyncIterator[Settings]:
    """This test's own exchange, queues, Redis keys and Celery key prefix; all removed after."""
    run = run_id()
    settings = Settings(
        environment="test",
        amqp_url=AMQP_URL,
        **run_bus_settings(run),
        bus_retry_base_delay_seconds=0.2,
        redis_key_prefix=f"test:{run}:consumer",
        celery_key_prefix=f"test:{run}:celery:",
        dedup_claim_ttl_seconds=5,
    )
    yield settings

    await delete_topology(amqp, settings.bus_topology(), [(SUBSCRIBER, EventType.NEW_ORDER)])
    await delete_redis_keys(settings.redis_url.get_secret_value(), settings.redis_key_prefix)
    await delete_redis_keys(
        settings.celery_broker_url.get_secret_value(), settings.celery_key_prefix
    )
