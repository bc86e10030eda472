"""`new_order` → Celery tasks: one `process_orders` task per batch of event ids (or one
`process_order` task per event id with ``CONSUMER_TASK_BATCH_SIZE=1``).

De-duplication is a Redis key per event id: claimed (SET NX, short TTL) before the task is
sent and marked sent (long TTL) after, so a redelivered or replayed event sends nothing, two
copies handled at once send one task, and a crash between sending and marking sends again
rather than losing the order (the worker is idempotent for that case). While the sends are on
their way the claims are renewed every third of their TTL (only those still ours): a slow
broker cannot let a claim lapse under its send and a copy send the task too. Each send is
bounded (``celery_send_timeout_seconds`` per connect and command), so a renewal ends.

The events in hand (up to the prefetch) are handled as one batch: one pipelined round trip
claims every event id, one thread hop sends the tasks (one per ``task_batch_size`` orders, so the
worker pays a task's own cost once per batch), one round trip marks them sent, and the
subscriber acks them at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from celery import Celery
from opentelemetry.trace import Span, use_span
from redis.asyncio import Redis

from event_consumer.settings import Settings
from order_common.delivery import Delivery, Handled, Outcome
from order_common.events import NewOrder
from order_common.logging import OUTAGE_WARNINGS
from order_common.outages import is_dependency_outage
from order_common.tasks import (
    PROCESS_ORDER_TASK,
    PROCESS_ORDERS_TASK,
    BatchedOrder,
    ProcessOrder,
    ProcessOrders,
)
from order_common.telemetry import (
    SpanKind,
    current_span,
    error_status,
    inject_headers,
    messaging_attributes,
    tracer,
)

logger = logging.getLogger(__name__)

SUBSCRIBER = "event-consumer"
_SENT = b"sent"

# Renew each claim (KEYS) that still holds this handler's value (ARGV[1]) for ARGV[2] ms.
_RENEW_CLAIMS = """
local renewed = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"""


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
        broker_transport_options={
            **settings.celery_transport_options(),
            # Every wait on the broker is bounded: a hung Redis fails the send, not the process.
            "socket_timeout": settings.celery_send_timeout_seconds,
            "socket_connect_timeout": settings.celery_send_timeout_seconds,
        },
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
    """A batch handler: one outcome per delivery, in order. A batch costs one Redis round trip
    to claim every event id, one thread hop to send the tasks, one round trip to mark them
    sent -- not three round trips and a thread hop per order."""

    def __init__(self, settings: Settings, redis: Redis, celery: Celery) -> None:
        self._settings = settings
        self._redis = redis
        self._celery = celery
        self._renew = redis.register_script(_RENEW_CLAIMS)

    def _key(self, event_id: uuid.UUID) -> str:
        return f"{self._settings.redis_key_prefix}:dedup:new_order:{event_id}"

    async def __call__(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        # One claim per event id; a second copy in the batch shares the first one's outcome.
        first: dict[uuid.UUID, int] = {}
        for index, delivery in enumerate(deliveries):
            order = delivery.envelope.data
            assert isinstance(order, NewOrder)
            _log(delivery, "new_order received order_id=%s")
            first.setdefault(delivery.envelope.event_id, index)
        event_ids = list(first)
        keys = [self._key(event_id) for event_id in event_ids]
        claim = f"claim:{uuid.uuid4().hex}".encode()
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.set(key, claim, nx=True, ex=self._settings.dedup_claim_ttl_seconds)
            claimed = await pipe.execute()
        held = [event_id for event_id, ok in zip(event_ids, claimed, strict=True) if not ok]
        current: dict[uuid.UUID, Any] = {}
        if held:
            values = await self._redis.mget([self._key(event_id) for event_id in held])
            current = dict(zip(held, values, strict=True))

        outcome_of: dict[uuid.UUID, Outcome] = {}
        for event_id, value in current.items():
            delivery = deliveries[first[event_id]]
            if value == _SENT:
                _log(delivery, "duplicate new_order skipped order_id=%s")
                outcome_of[event_id] = Handled.DUPLICATE
            else:
                outcome_of[event_id] = EventInFlight(
                    f"event {event_id} is being handled by another delivery"
                )

        to_send = [event_id for event_id, ok in zip(event_ids, claimed, strict=True) if ok]
        if to_send:
            failures = await self._send_holding_claims(
                [deliveries[first[event_id]] for event_id in to_send],
                [self._key(event_id) for event_id in to_send],
                claim,
            )
            sent = [e for e, failure in zip(to_send, failures, strict=True) if failure is None]
            async with self._redis.pipeline(transaction=False) as pipe:
                for event_id in sent:
                    pipe.set(self._key(event_id), _SENT, ex=self._settings.dedup_ttl_seconds)
                await pipe.execute()
            for event_id, failure in zip(to_send, failures, strict=True):
                delivery = deliveries[first[event_id]]
                if failure is None:
                    _log(delivery, "process_order sent order_id=%s")
                    outcome_of[event_id] = Handled.OK
                else:
                    outcome_of[event_id] = failure
            await self._release([e for e, f in zip(to_send, failures, strict=True) if f], claim)

        outcomes: list[Outcome] = []
        for index, delivery in enumerate(deliveries):
            event_id = delivery.envelope.event_id
            outcome = outcome_of[event_id]
            if first[event_id] != index and not isinstance(outcome, BaseException):
                outcome = Handled.DUPLICATE  # a copy of an event sent (or skipped) above
            outcomes.append(outcome)
        return outcomes

    async def _send_holding_claims(
        self, deliveries: Sequence[Delivery], keys: Sequence[str], claim: bytes
    ) -> list[BaseException | None]:
        """``_send``, renewing the claims of ``keys`` until it returns."""
        renewing = asyncio.create_task(self._renew_claims(keys, claim))
        try:
            return await self._send(deliveries)
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _renew_claims(self, keys: Sequence[str], claim: bytes) -> None:
        ttl = self._settings.dedup_claim_ttl_seconds
        while True:
            await asyncio.sleep(ttl / 3)
            try:
                await self._renew(keys=list(keys), args=[claim, int(ttl * 1000)])
            except Exception as exc:  # Redis is away: the send fails or the claim expires
                OUTAGE_WARNINGS.warning(
                    logger,
                    "claims of %d events not renewed during their send: %s",
                    len(keys),
                    f"{type(exc).__name__}: {exc}",
                )

    async def _release(self, event_ids: Sequence[uuid.UUID], claim: bytes) -> None:
        """Give up the claims of the sends that failed, so their retry can send (unless a claim
        already expired and another delivery took it)."""
        if not event_ids:
            return
        keys = [self._key(event_id) for event_id in event_ids]
        values = await self._redis.mget(keys)
        ours = [key for key, value in zip(keys, values, strict=True) if value == claim]
        if ours:
            await self._redis.delete(*ours)

    async def _send(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        """Send the deliveries' orders (a task per batch, see ``_send_all``), all in one thread
        hop (send_task blocks on the broker), each order with its own trace's context: the
        worker's span of the order continues the order's trace. (Celery's own instrumentation
        cannot: it only follows tasks it has registered, and this process sends by name.)
        What each order's send raised, or None."""
        spans: list[Span] = []
        sends: list[tuple[dict[str, Any], dict[str, str]]] = []
        for delivery in deliveries:
            order = delivery.envelope.data
            payload = ProcessOrder(order_id=order.order_id, event_id=delivery.envelope.event_id)
            with use_span(delivery.span or current_span(), end_on_exit=False):
                span = tracer().start_span(
                    f"{PROCESS_ORDER_TASK} send",
                    kind=SpanKind.PRODUCER,
                    attributes=messaging_attributes(
                        "celery",
                        "send",
                        self._settings.celery_queue,
                        extra={"celery.task_name": PROCESS_ORDER_TASK},
                    ),
                )
            with use_span(span, end_on_exit=False):
                headers = inject_headers()
            spans.append(span)
            sends.append((payload.model_dump(mode="json"), headers))
        try:
            failures = await asyncio.to_thread(self._send_all, sends)
        except BaseException as exc:
            failures = [exc] * len(spans)
            raise
        finally:
            for span, failure in zip(spans, failures, strict=True):
                if failure is not None:
                    span.record_exception(failure)
                    span.set_status(error_status(failure))
                span.end()
        return failures

    def _send_all(
        self, sends: Sequence[tuple[dict[str, Any], dict[str, str]]]
    ) -> list[BaseException | None]:
        """One task per ``task_batch_size`` orders (each order with its trace's headers), or
        one ``process_order`` per order when that size is 1. What each order's send raised."""
        size = self._settings.task_batch_size
        chunks = [sends[start : start + size] for start in range(0, len(sends), size)]
        failures: list[BaseException | None] = []
        outage: BaseException | None = None
        for chunk in chunks:
            if outage is not None:  # the broker is away: the rest would only wait to fail
                failures += [outage] * len(chunk)
                continue
            try:
                self._send_chunk(chunk)
            except Exception as exc:
                failures += [exc] * len(chunk)
                if is_dependency_outage(exc):
                    outage = exc
            else:
                failures += [None] * len(chunk)
        return failures

    def _send_chunk(self, chunk: Sequence[tuple[dict[str, Any], dict[str, str]]]) -> None:
        if self._settings.task_batch_size == 1:
            [(kwargs, headers)] = chunk
            self._celery.send_task(
                PROCESS_ORDER_TASK,
                kwargs=kwargs,
                queue=self._settings.celery_queue,
                headers=headers,
            )
            return
        batch = ProcessOrders(
            orders=[BatchedOrder(**kwargs, trace=headers) for kwargs, headers in chunk]
        )
        self._celery.send_task(
            PROCESS_ORDERS_TASK,
            kwargs=batch.model_dump(mode="json"),
            queue=self._settings.celery_queue,
        )


def _log(delivery: Delivery, message: str) -> None:
    """An INFO line about the delivery's order, in the order's trace: a batch is handled in
    the context of its first delivery."""
    with use_span(delivery.span or current_span(), end_on_exit=False):
        logger.info(message, delivery.envelope.data.order_id, extra=_extra(delivery))


def _extra(delivery: Delivery) -> dict[str, str]:
    order = delivery.envelope.data
    return {"order_id": str(order.order_id), "event_id": str(delivery.envelope.event_id)}
