"""The consumer process: its resources are built here and closed on the way out."""

from __future__ import annotations

import asyncio
import logging

from event_consumer.consumer import SUBSCRIBER, NewOrderHandler, create_celery_producer
from event_consumer.settings import Settings
from order_common.bus import connect_retrying
from order_common.cache import build_redis
from order_common.dlq import adopt_unrouted_in_background, stop_adopting
from order_common.events import EventType
from order_common.subscriber import Subscriber

logger = logging.getLogger(__name__)


async def run(settings: Settings, stop: asyncio.Event) -> None:
    """Consume `new_order` until ``stop`` is set; then finish the messages in hand and close."""
    redis = build_redis(settings.redis_url.get_secret_value(), settings.redis_timeout_seconds)
    celery = create_celery_producer(settings)
    connection = await connect_retrying(
        settings.amqp_url.get_secret_value(), name=settings.service_name, stop=stop
    )
    if connection is None:  # stopped before the broker ever answered
        await redis.aclose()
        await asyncio.to_thread(celery.close)
        return
    try:
        subscriber = Subscriber(
            connection,
            settings.bus_topology(),
            SUBSCRIBER,
            EventType.NEW_ORDER,
            batch_handler=NewOrderHandler(settings, redis, celery),
            retry=settings.bus_retry_policy(),
            outage_retry=settings.bus_outage_retry_policy(),
            prefetch=settings.prefetch,
            delivery_limit=settings.bus_delivery_limit,
        )
        await subscriber.start()
        # In the background: consuming does not wait for it.
        adoption = adopt_unrouted_in_background(
            connection, settings.bus_topology(), [subscriber.event_type]
        )
        logger.info("event consumer started")
        await stop.wait()
        logger.info("stopping: finishing the messages in hand")
        await stop_adopting(adoption)
        await subscriber.stop(settings.shutdown_grace_seconds)
    finally:
        await connection.close()
        await redis.aclose()
        await asyncio.to_thread(celery.close)
        logger.info("event consumer stopped")
