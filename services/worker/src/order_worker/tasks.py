"""`process_order`: the order's processing, then `order_processed` on the bus.

Idempotent per order: a Redis marker, set once `order_processed` was confirmed by the broker,
turns a repeated task (a redelivered event, a task handed to another worker) into a no-op. A
crash between the publish and the marker publishes twice; the orders service applies
`order_processed` idempotently."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import amqp.exceptions
import kombu.exceptions
import redis.exceptions

from order_common.events import EventType, OrderProcessed, envelope
from order_common.tasks import PROCESS_ORDER_TASK, ProcessOrder

if TYPE_CHECKING:
    from order_worker.app import OrderWorkerApp

logger = logging.getLogger(__name__)

# Worth retrying: the broker or Redis was unreachable or did not confirm.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    amqp.exceptions.ConnectionError,
    amqp.exceptions.ChannelError,
    amqp.exceptions.MessageNacked,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def marker_key(app: OrderWorkerApp, order_id: object) -> str:
    return f"{app.settings.redis_key_prefix}:processed:{order_id}"


def process_order(task: Any, order_id: str, event_id: str) -> str:
    app: OrderWorkerApp = task.app
    settings = app.settings
    resources = app.resources()
    request = ProcessOrder.model_validate({"order_id": order_id, "event_id": event_id})
    extra = {"order_id": str(request.order_id), "event_id": str(request.event_id)}

    key = marker_key(app, request.order_id)
    if resources.redis.exists(key):
        logger.info("order %s already processed; skipping", request.order_id, extra=extra)
        return "skipped"

    logger.info("processing order %s", request.order_id, extra=extra)
    if settings.processing_delay_seconds > 0:
        time.sleep(settings.processing_delay_seconds)
    processed_at = datetime.now(UTC)
    logger.info("Order %s processed", request.order_id, extra=extra)

    resources.publish(
        envelope(
            EventType.ORDER_PROCESSED,
            OrderProcessed(order_id=request.order_id, processed_at=processed_at),
        )
    )
    resources.redis.set(key, processed_at.isoformat(), ex=settings.idempotency_ttl_seconds)
    return "processed"


def register_tasks(app: OrderWorkerApp) -> None:
    settings = app.settings
    app.task(
        name=PROCESS_ORDER_TASK,
        bind=True,
        autoretry_for=TRANSIENT_ERRORS,
        retry_backoff=True,
        retry_backoff_max=settings.task_retry_backoff_max_seconds,
        retry_jitter=True,
        max_retries=settings.task_max_retries,
    )(process_order)
