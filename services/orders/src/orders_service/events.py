"""``orders-service events``: the orders service's process on the event bus. It does two jobs,
each in its own module, on one connection to RabbitMQ and one database pool:

- the outbox relay (``orders_service.relay``): publishes what the API wrote to the outbox;
- applying ``order_processed`` (``orders_service.order_processed``): sets ``processed_at``
  when the worker reports an order done, and refreshes its cache entry.

Any number may run (the relay shares the backlog with ``SKIP LOCKED``; the subscribers share
the queue). The first connection to RabbitMQ is retried until the broker answers."""

from __future__ import annotations

import asyncio
import logging

from order_common.bus import connect_retrying, declare_exchange
from order_common.cache import build_redis
from order_common.db import build_engine, build_session_factory
from order_common.dlq import adopt_unrouted_in_background, stop_adopting
from orders_service.cache import OrderCache
from orders_service.order_processed import OrderProcessedHandler, order_processed_subscriber
from orders_service.outbox_publisher import OutboxPublisher
from orders_service.relay import OutboxRelay
from orders_service.settings import Settings

logger = logging.getLogger(__name__)

# Messages in hand when stopping get this long to finish; then they go back to the queue.
SHUTDOWN_GRACE_SECONDS = 20.0


class EventsProcess:
    """The process's resources and its two jobs. ``relay`` is there once ``started`` is set."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.started = asyncio.Event()
        self.relay: OutboxRelay | None = None
        self.adoption: asyncio.Task[int] | None = None  # re-driving the unrouted queue

    async def run(self, stop: asyncio.Event) -> None:
        """Relay the outbox and apply ``order_processed`` until ``stop`` is set."""
        settings = self.settings
        engine = build_engine(
            settings.database_url.get_secret_value(),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        session_factory = build_session_factory(engine)
        redis = build_redis(settings.redis_url.get_secret_value(), settings.redis_timeout_seconds)
        cache = OrderCache(
            redis, key_prefix=settings.redis_key_prefix, ttl_seconds=settings.cache_ttl_seconds
        )
        topology = settings.bus_topology()
        try:
            connection = await connect_retrying(
                settings.amqp_url.get_secret_value(),
                name=f"{settings.service_name}-events",
                stop=stop,
            )
            if connection is None:
                return
            try:
                channel = connection.channel(publisher_confirms=True)
                await channel.initialize()
                exchange = await declare_exchange(channel, topology)
                subscriber = order_processed_subscriber(
                    connection, settings, OrderProcessedHandler(session_factory, cache)
                )
                await subscriber.start()
                # In the background: the relay must not wait for it (it may hold many events).
                self.adoption = adoption = adopt_unrouted_in_background(
                    connection, topology, [subscriber.event_type]
                )
                publisher = OutboxPublisher(
                    session_factory,
                    exchange,
                    batch_size=settings.relay_batch_size,
                    max_attempts=settings.relay_max_attempts,
                )
                self.relay = OutboxRelay(settings, session_factory, publisher, channel)
                logger.info("outbox relay started", extra={"exchange": topology.exchange})
                self.started.set()
                try:
                    await self.relay.run(stop)
                finally:
                    await stop_adopting(adoption)
                    await subscriber.stop(SHUTDOWN_GRACE_SECONDS)
            finally:
                await connection.close()
        finally:
            await redis.aclose()
            await engine.dispose()
            logger.info("outbox relay stopped")


async def run(settings: Settings, stop: asyncio.Event) -> None:
    await EventsProcess(settings).run(stop)
