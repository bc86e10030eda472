"""Applying ``order_processed``: the worker reports an order done, and this sets its
``processed_at`` through the same use case layer the routes use
(``service.mark_processed_many``), then refreshes its cache entry.

Reports are applied in batches: whatever the subscriber has in hand (up to
``order_processed_batch_size``, the queue's prefetch) goes into one transaction -- one locking
SELECT and one UPDATE -- and one Redis round trip, and the batch is acked at once. The
``orders-service events`` process runs it (``orders_service.events``);
``order_common.subscriber.Subscriber`` gives it the retries with back-off and the dead-letter
queue: a batch that fails because PostgreSQL is unreachable waits and runs again whole, without
spending attempts, and a report of an unknown order is dead-lettered alone."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime

from aio_pika.abc import AbstractConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from order_common.bus import RejectMessage
from order_common.delivery import Delivery, Handled, Outcome
from order_common.events import EventType, OrderProcessed
from order_common.subscriber import Subscriber
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
        batch_handler=handler,
        retry=settings.bus_retry_policy(),
        outage_retry=settings.bus_outage_retry_policy(),
        prefetch=settings.order_processed_batch_size,
        delivery_limit=settings.bus_delivery_limit,
    )


class OrderProcessedHandler:
    """A batch handler: one outcome per delivery, in order."""

    def __init__(
        self, session_factory: async_sessionmaker[AsyncSession], cache: OrderCache
    ) -> None:
        self._session_factory = session_factory
        self._cache = cache

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        reports: dict[uuid.UUID, datetime] = {}
        for delivery in deliveries:
            event = delivery.envelope.data
            assert isinstance(event, OrderProcessed)  # the subscriber validated the event type
            # A second report of one order in the batch is a duplicate: the first one counts.
            reports.setdefault(event.order_id, event.processed_at)
        processed = await service.mark_processed_many(
            OrdersUnitOfWork(self._session_factory), self._cache, reports=reports
        )
        outcomes: list[Outcome] = []
        first_seen: set[uuid.UUID] = set()
        for delivery in deliveries:
            event = delivery.envelope.data
            extra = {"order_id": str(event.order_id), "event_id": str(delivery.envelope.event_id)}
            outcome = processed.get(event.order_id)
            if outcome is None:
                # Orders are never deleted and `new_order` leaves only after the order
                # committed: an unknown id is a bad event, which no retry can fix.
                outcomes.append(RejectMessage(f"no order {event.order_id}"))
            elif outcome.changed and event.order_id not in first_seen:
                order = outcome.order
                if order.processed_at is not None:
                    lag = (order.processed_at - order.created_at).total_seconds()
                    PROCESSING_LAG.observe(max(0.0, lag), exemplar=exemplar())
                logger.info("order_processed applied order_id=%s", event.order_id, extra=extra)
                outcomes.append(Handled.OK)
            else:
                logger.info(
                    "order_processed duplicate ignored order_id=%s", event.order_id, extra=extra
                )
                outcomes.append(Handled.DUPLICATE)
            first_seen.add(event.order_id)
        return outcomes
