"""`new_order` → one Celery `process_order` task per event id.

De-duplication is a Redis key per event id: claimed (SET NX, short TTL) before the task is
sent and marked sent (long TTL) after, so a redelivered or replayed event sends nothing, two
copies handled at once send one task, and a crash between sending and marking sends again
rather than losing the order (the worker is idempotent for that case)."""

from __future__ import annotations

import asyncio
import logging
import uuid

from celery import Celery
from redis.asyncio import Redis

from event_consumer.settings import Settings
from order_common.events import NewOrder
from order_common.subscriber import Delivery, Handled
from order_common.tasks import PROCESS_ORDER_TASK, ProcessOrder
from order_common.telemetry import SpanKind, inject_headers, messaging_attributes, start_span

logger = logging.getLogger(__name__)

SUBSCRIBER = "event-consumer"
_SENT = b"sent"


class EventInFlight(Exception):
    """Another delivery of the same event holds the claim: try again after a back-off."""


def create_celery_producer(settings: Settings) -> Celery:
    """A Celery app used only to send tasks by name: no task code, no worker import."""
    app = Celery(
        SUBSCRIBER, broker=settings.celery_broker_url.get_secret_value(), set_as_current=False
    )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.celery_queue,
        broker_transport_options=settings.celery_transport_options(),
        broker_connection_retry_on_startup=True,
        # Bounded: a failed send fails the handler, and the bus retries the event.
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    )
    return app


class NewOrderHandler:
    def __init__(self, settings: Settings, redis: Redis, celery: Celery) -> None:
        self._settings = settings
        self._redis = redis
        self._celery = celery

    def _key(self, event_id: uuid.UUID) -> str:
        return f"{self._settings.redis_key_prefix}:dedup:new_order:{event_id}"

    async def __call__(self, delivery: Delivery) -> Handled:
        envelope = delivery.envelope
        order = envelope.data
        assert isinstance(order, NewOrder)
        extra = {"order_id": str(order.order_id), "event_id": str(envelope.event_id)}
        logger.info("new_order received order_id=%s", order.order_id, extra=extra)

        key = self._key(envelope.event_id)
        claim = f"claim:{uuid.uuid4().hex}".encode()
        claimed = await self._redis.set(
            key, claim, nx=True, ex=self._settings.dedup_claim_ttl_seconds
        )
        if not claimed:
            if await self._redis.get(key) == _SENT:
                logger.info("duplicate new_order skipped order_id=%s", order.order_id, extra=extra)
                return Handled.DUPLICATE
            raise EventInFlight(f"event {envelope.event_id} is being handled by another delivery")

        payload = ProcessOrder(order_id=order.order_id, event_id=envelope.event_id)
        try:
            await self._send(payload)
        except Exception:
            # Release the claim so the retry can send (unless it already expired and another
            # delivery took it).
            if await self._redis.get(key) == claim:
                await self._redis.delete(key)
            raise
        await self._redis.set(key, _SENT, ex=self._settings.dedup_ttl_seconds)
        logger.info("process_order sent order_id=%s", order.order_id, extra=extra)
        return Handled.OK

    async def _send(self, payload: ProcessOrder) -> None:
        """Send the task with this trace's context in its headers: the worker's task span
        continues it. (Celery's own instrumentation cannot: it only follows tasks it has
        registered, and this process sends by name.)"""
        with start_span(
            f"{PROCESS_ORDER_TASK} send",
            kind=SpanKind.PRODUCER,
            attributes=messaging_attributes(
                "celery",
                "send",
                self._settings.celery_queue,
                extra={"celery.task_name": PROCESS_ORDER_TASK},
            ),
        ):
            # send_task blocks on the broker: keep it off the event loop.
            await asyncio.to_thread(
                self._celery.send_task,
                PROCESS_ORDER_TASK,
                kwargs=payload.model_dump(mode="json"),
                queue=self._settings.celery_queue,
                headers=inject_headers(),
            )
