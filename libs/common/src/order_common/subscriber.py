"""Consuming from the event bus: ``Subscriber`` runs a handler on each message of one
subscriber's queue, with retries and back-off, a dead-letter queue for what keeps failing, and a
graceful stop. The topology and publishing it builds on are in ``order_common.bus``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    ConsumerTag,
)

from order_common import telemetry
from order_common.bus import (
    ATTEMPTS_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DEFAULT_DELIVERY_LIMIT,
    ERROR_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    DeadLetterReason,
    RejectMessage,
    RetryPolicy,
    Topology,
    declare_subscription,
    republished,
    retry_queue_name,
)
from order_common.dlq import redrive
from order_common.events import Envelope, EventType, parse_envelope
from order_common.metrics import BUS_EVENTS_CONSUMED, BUS_HANDLING_DURATION, BUS_RESULTS

logger = logging.getLogger(__name__)

_MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class Delivery:
    """What a handler gets: the validated envelope and the message's context."""

    envelope: Envelope[Any]
    attempt: int  # 1 on the first run of the handler for this message
    headers: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False  # the broker delivered it before without an ack (a crash)


class Handled(StrEnum):
    """What a handler may return (``None`` means ``OK``); counted on the metrics."""

    OK = "ok"
    DUPLICATE = "duplicate"  # seen before: nothing was done


Handler = Callable[[Delivery], Awaitable[Handled | None]]


def _attempts_so_far(headers: Mapping[str, Any]) -> int:
    try:
        return max(0, int(headers.get(ATTEMPTS_HEADER, 0)))
    except (TypeError, ValueError):
        return 0


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_LENGTH]


class Subscriber:
    """Runs ``handler`` on each ``event_type`` message of ``subscriber``'s queue.

    - success: ack.
    - the body is not a valid envelope of ``event_type`` (poison), or the handler raised
      ``RejectMessage``: to the dead-letter queue at once, with the reason, then ack.
    - any other exception: to the retry queue with the next back-off delay and the attempt
      count in ``x-attempts``, then ack; after ``retry.max_attempts`` runs, to the dead-letter
      queue with the reason instead.
    - every republish waits for the broker's confirm before the ack, so a crash in between
      repeats the message rather than losing it; if the republish fails, the message is
      returned to the queue (nack with requeue), where ``x-delivery-limit`` bounds it.

    At most ``prefetch`` handlers run at once. Handlers must be idempotent: delivery is at
    least once. ``stop()`` cancels the consumer, waits for the handlers that run to finish,
    then closes the channel; a message not yet settled goes back to the queue.

    Usage::

        subscriber = Subscriber(connection, topology, "event-consumer", EventType.NEW_ORDER,
                                handle, retry=settings.bus_retry_policy(), prefetch=16)
        await subscriber.start()
        ...
        await subscriber.stop()
    """

    def __init__(
        self,
        connection: AbstractConnection,
        topology: Topology,
        subscriber: str,
        event_type: EventType,
        handler: Handler,
        *,
        retry: RetryPolicy | None = None,
        prefetch: int = 16,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        publish_timeout: float = 10.0,
    ) -> None:
        self._connection = connection
        self.topology = topology
        self.subscriber = subscriber
        self.event_type = EventType(event_type)
        self._handler = handler
        self.retry = retry or RetryPolicy()
        self._prefetch = prefetch
        self._delivery_limit = delivery_limit
        self._publish_timeout = publish_timeout
        self.queue_name = topology.queue_name(subscriber, event_type)
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._dlx: AbstractExchange | None = None
        self._consumer_tag: ConsumerTag | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def start(self) -> None:
        channel = self._connection.channel(publisher_confirms=True)
        await channel.initialize()
        try:
            await channel.set_qos(prefetch_count=self._prefetch)
            self._queue = await declare_subscription(
                channel,
                self.topology,
                self.subscriber,
                self.event_type,
                delivery_limit=self._delivery_limit,
            )
            self._dlx = await channel.get_exchange(self.topology.dead_letter_exchange, ensure=False)
            self._channel = channel
            for result in BUS_RESULTS:  # every series exists from the start, at 0
                BUS_EVENTS_CONSUMED.labels(self.subscriber, self.event_type.value, result)
            self._consumer_tag = await self._queue.consume(self._on_message)
        except BaseException:
            # e.g. PRECONDITION_FAILED: the queue exists with other arguments.
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        logger.info("consuming %s", self.queue_name, extra={"queue": self.queue_name})
        await self._adopt_unrouted()

    async def _adopt_unrouted(self) -> None:
        """Events published before this queue first existed waited in the unrouted queue;
        now that the queue is bound, send them through the exchange again so none is left
        behind (the ones nobody subscribes to go back to the unrouted queue)."""
        try:
            moved = await redrive(self._connection, self.topology.unrouted_queue)
        except Exception as exc:  # the queue is consumed already; this is a courtesy
            logger.warning("could not re-drive the unrouted queue: %s", exc)
            return
        if moved:
            logger.info("re-drove %d unrouted events", moved, extra={"queue": self.queue_name})

    async def stop(self, grace_period: float = 30.0) -> None:
        """Stop taking messages, let the running handlers finish (up to ``grace_period`` s;
        after that they are cancelled and their messages go back to the queue), close."""
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):  # a dead channel has no consumer to cancel
                await self._queue.cancel(self._consumer_tag)
            self._consumer_tag = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_period
        # Deliveries that crossed the cancel still start their handler: keep waiting until
        # none is left rather than waiting on one snapshot.
        await asyncio.sleep(0)
        while self._in_flight:
            remaining = deadline - loop.time()
            if remaining <= 0:
                logger.warning(
                    "%d handlers still running at shutdown; their messages will be redelivered",
                    len(self._in_flight),
                )
                for task in self._in_flight:
                    task.cancel()
                await asyncio.gather(*self._in_flight, return_exceptions=True)
                break
            await asyncio.wait(set(self._in_flight), timeout=remaining)
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None
        logger.info("stopped consuming %s", self.queue_name, extra={"queue": self.queue_name})

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            await self._settle(message)
        except Exception:
            # Only settling can fail here (the broker or the link): hand the message back.
            logger.exception(
                "could not settle a message of %s; returning it to the queue", self.queue_name
            )
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        finally:
            if task is not None:
                self._in_flight.discard(task)

    def _parent_context(self, headers: Mapping[str, Any]) -> Any:
        """The message's trace context, or the current one when it already continues it (the
        aio-pika instrumentation's receive span)."""
        carried = telemetry.extract_context(headers)
        current = telemetry.current_trace_ids()
        carried_ids = telemetry.trace_ids(carried)
        if current is not None and (carried_ids is None or carried_ids[0] == current[0]):
            return None
        return carried

    async def _settle(self, message: AbstractIncomingMessage) -> None:
        headers = dict(message.headers or {})
        with telemetry.start_span(
            f"{self.event_type.value} process",
            kind=telemetry.SpanKind.CONSUMER,
            parent=self._parent_context(headers),
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.operation.type": "process",
                "messaging.destination.name": self.queue_name,
                "messaging.consumer.group.name": self.subscriber,
                "messaging.message.id": message.message_id or "",
            },
        ) as span:
            start = time.perf_counter()
            result = await self._settle_traced(message, headers)
            span.set_attribute("order_platform.result", result)
            BUS_EVENTS_CONSUMED.labels(self.subscriber, self.event_type.value, result).inc()
            BUS_HANDLING_DURATION.labels(self.subscriber, self.event_type.value).observe(
                time.perf_counter() - start, exemplar=telemetry.exemplar()
            )

    async def _settle_traced(
        self, message: AbstractIncomingMessage, headers: dict[str, Any]
    ) -> str:
        """Handle and settle one message; return its result for the metrics."""
        attempt = _attempts_so_far(headers) + 1
        try:
            envelope = parse_envelope(message.body)
            if envelope.event_type != self.event_type:
                raise ValueError(f"expected a {self.event_type} event, got {envelope.event_type}")
        except ValueError as exc:  # pydantic's ValidationError included
            await self._dead_letter(message, headers, DeadLetterReason.POISON, exc, attempt - 1)
            await message.ack()
            return "dead_lettered"

        log_extra = {
            "queue": self.queue_name,
            "event_id": str(envelope.event_id),
            "attempt": attempt,
        }
        result = "ok"
        try:
            handled = await self._handler(
                Delivery(envelope, attempt, headers, redelivered=bool(message.redelivered))
            )
            result = Handled(handled or Handled.OK).value
        except RejectMessage as exc:
            result = "dead_lettered"
            await self._dead_letter(message, headers, DeadLetterReason.REJECTED, exc, attempt)
        except Exception as exc:
            trace_span = telemetry.current_span()
            trace_span.record_exception(exc)
            trace_span.set_status(telemetry.error_status(exc))
            if attempt >= self.retry.max_attempts:
                result = "dead_lettered"
                await self._dead_letter(
                    message, headers, DeadLetterReason.MAX_ATTEMPTS, exc, attempt
                )
            else:
                result = "retried"
                delay = self.retry.delay(attempt)
                logger.warning(
                    "handler failed (attempt %d of %d), retrying in %.1f s: %s",
                    attempt,
                    self.retry.max_attempts,
                    delay,
                    _error_text(exc),
                    extra=log_extra,
                )
                await self._publish_retry(message, headers, attempt, delay, exc)
        await message.ack()
        return result

    async def _publish_retry(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        attempts: int,
        delay: float,
        exc: BaseException,
    ) -> None:
        assert self._channel is not None
        headers = {
            **headers,
            ATTEMPTS_HEADER: attempts,
            ERROR_HEADER: _error_text(exc),
            ORIGINAL_ROUTING_KEY_HEADER: headers.get(
                ORIGINAL_ROUTING_KEY_HEADER, message.routing_key or ""
            ),
        }
        await self._channel.default_exchange.publish(
            republished(message, headers, expiration=delay),
            routing_key=retry_queue_name(self.queue_name),
            mandatory=False,
            timeout=self._publish_timeout,
        )

    async def _dead_letter(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        reason: DeadLetterReason,
        exc: BaseException,
        attempts: int,
    ) -> None:
        assert self._dlx is not None
        error = _error_text(exc)
        logger.error(
            "dead-lettering a message of %s (%s): %s",
            self.queue_name,
            reason,
            error,
            extra={"queue": self.queue_name, "reason": str(reason), "attempts": attempts},
        )
        headers = {
            **headers,
            REASON_HEADER: reason.value,
            ERROR_HEADER: error,
            ATTEMPTS_HEADER: attempts,
            QUEUE_HEADER: self.queue_name,
            DEAD_LETTERED_AT_HEADER: datetime.now(UTC).isoformat(),
            ORIGINAL_ROUTING_KEY_HEADER: headers.get(
                ORIGINAL_ROUTING_KEY_HEADER, message.routing_key or ""
            ),
        }
        await self._dlx.publish(
            republished(message, headers),
            routing_key=self.queue_name,
            mandatory=False,
            timeout=self._publish_timeout,
        )
