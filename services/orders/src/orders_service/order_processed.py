"""``order_processed`` from the bus, applied through the same use case layer the routes use.

The ``orders-service events`` process runs it (``orders_service.events``);
``order_common.subscriber.Subscriber`` gives it the retries with back-off and the dead-letter
queue."""

from __future__ import annotations

import logging

from aio_pika.abc import AbstractConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from order_common.bus import RejectMessage
from order_common.errors import NotFound
from order_common.events import EventType, OrderProcessed
from order_common.subscriber import Delivery, Handled, Subscriber
from order_common.telemetry import exemplar
from orders_service import service
from orders_service.cache import OrderCache
from orders_service.metrics import PROCESSING_LAG
from orders_service.settings import Settings
from orders_service.uow import OrdersUnitOfWork

logger = logging.getLogger(__name__)

# The orders service's queues are `{prefix}.orders.{event_type}`.
SUBSCRIBER = "orders"


def order_processed_subscriber(
    connection: AbstractConnection, settings: Settings, handler: OrderProcessedHandler
) -> Subscriber:
    return Subscriber(
        connection,
        settings.bus_topology(),
        SUBSCRIBER,
        EventType.ORDER_PROCESSED,
        handler,
        retry=settings.bus_retry_policy(),
        outage_retry=settings.bus_outage_retry_policy(),
        delivery_limit=settings.bus_delivery_limit,
    )


class OrderProcessedHandler:
    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], cache: OrderCache
    ) -> None:
        self._session_factory = session_factory
        self._cache = cache

    async def __call__(self, delivery: Delivery) -> Handled:
        event = delivery.envelope.data
        assert isinstance(event, OrderProcessed)  # the subscriber validated the event type
        extra = {"order_id": str(event.order_id), "event_id": str(delivery.envelope.event_id)}
        try:
            outcome = await service.mark_processed(
                OrdersUnitOfWork(self._session_factory),
                self._cache,
                order_id=event.order_id,
                processed_at=event.processed_at,
            )
        except NotFound as exc:
            # Orders are never deleted and `new_order` leaves only after the order committed:
            # an unknown id is a bad event, which no retry can fix.
            raise RejectMessage(f"no order {event.order_id}") from exc
        if outcome.changed:
            order = outcome.order
            if order.processed_at is not None:
                lag = (order.processed_at - order.created_at).total_seconds()
                PROCESSING_LAG.observe(max(0.0, lag), exemplar=exemplar())
            logger.info("order_processed applied order_id=%s", event.order_id, extra=extra)
            return Handled.OK
        logger.info("order_processed duplicate ignored order_id=%s", event.order_id, extra=extra)
        return Handled.DUPLICATE
