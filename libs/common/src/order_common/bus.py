"""The event bus on RabbitMQ: topology, publishing with confirms, and consuming with retries
and a dead-letter queue. Every service that touches the bus goes through this module, so they
all declare the same exchanges and queues with the same arguments (RabbitMQ refuses a second
declaration whose arguments differ).

Topology, for ``Topology(exchange="order-platform.events", queue_prefix="order-platform")``:

- ``order-platform.events``: durable topic exchange; the routing key is the event type. Its
  alternate exchange ``order-platform.events.unrouted`` (fanout) keeps what no queue is bound
  for in the quorum queue ``order-platform.events.unrouted`` -- e.g. a ``new_order`` published
  before any subscriber declared its queue -- instead of the broker dropping it. They wait
  there for a re-drive for 7 days (an event type nobody subscribes to must not pile up); a
  ``Subscriber`` re-drives them when it starts, so its first start adopts what it missed.
- per subscriber and event type, the quorum queue ``order-platform.{subscriber}.{event_type}``,
  bound with the event type. ``x-delivery-limit`` sends a message that keeps killing its
  consumer (nothing acks it) to the dead-letter queue through the dead-letter exchange.
- ``{queue}.retry``: the back-off queue. A failed message is republished there with a
  per-message TTL; when it expires RabbitMQ dead-letters it straight back into ``{queue}``
  (through the default exchange, so other subscribers of the event do not see it again).
  Messages expire in order from its head, so one with a long delay can hold back shorter ones
  behind it, never for longer than ``RetryPolicy.max_delay``.
- ``order-platform.events.dlx``: direct dead-letter exchange, routing by queue name into
  ``{queue}.dlq`` (durable quorum queue). Nothing leaves a dead-letter queue but an explicit
  re-drive (see ``order_common.dlq`` and the ``order-bus`` command).

Publishers should call ``declare_exchange`` and ``publish_envelope``; subscribers use
``Subscriber``, which declares its own queues idempotently when it starts.

Tracing: messages carry the W3C trace context in their headers (``traceparent``). A publish
continues the context found in the headers it is given (the outbox keeps the one of the request
that wrote the event), else the current one; ``Subscriber`` runs each handler in a span that
continues the message's context. Metrics: ``bus_events_consumed_total`` by result and
``bus_event_handling_seconds`` (``order_common.metrics``).
"""

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

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    ConsumerTag,
    DeliveryMode,
    ExchangeType,
)
from pydantic import Field
from pydantic_settings import BaseSettings

from order_common import telemetry
from order_common.events import Envelope, EventType, parse_envelope
from order_common.metrics import BUS_EVENTS_CONSUMED, BUS_HANDLING_DURATION, BUS_RESULTS

logger = logging.getLogger(__name__)

DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_EXCHANGE = "order-platform.events"
DEFAULT_QUEUE_PREFIX = "order-platform"
# Changing it later needs the queue deleted (or a policy): RabbitMQ refuses a redeclaration
# with other arguments. It only counts deliveries that ended without an ack (crashes, lost
# connections); handler failures go through the retry queue and `RetryPolicy.max_attempts`.
DEFAULT_DELIVERY_LIMIT = 10

# Headers this module writes. RabbitMQ's own (x-death, x-first-death-*, x-delivery-count)
# are stripped on republishing: they belong to the broker.
ATTEMPTS_HEADER = "x-attempts"
REASON_HEADER = "x-dead-letter-reason"
ERROR_HEADER = "x-error"
ORIGINAL_ROUTING_KEY_HEADER = "x-original-routing-key"
QUEUE_HEADER = "x-queue"
DEAD_LETTERED_AT_HEADER = "x-dead-lettered-at"
REDRIVES_HEADER = "x-redrives"
_BROKER_HEADER_PREFIXES = ("x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_MAX_ERROR_LENGTH = 2000

JSON = "application/json"


class DeadLetterReason(StrEnum):
    POISON = "poison"  # the body is not a valid envelope for this queue: retrying cannot help
    REJECTED = "rejected"  # the handler raised RejectMessage
    MAX_ATTEMPTS = "max-attempts"  # the handler kept failing


class RejectMessage(Exception):
    """Raise from a handler for a message that can never succeed: it is dead-lettered at once
    with this error's text instead of being retried."""


@dataclass(frozen=True)
class Topology:
    """The names every service derives from two settings."""

    exchange: str = DEFAULT_EXCHANGE
    queue_prefix: str = DEFAULT_QUEUE_PREFIX

    def queue_name(self, subscriber: str, event_type: EventType | str) -> str:
        return f"{self.queue_prefix}.{subscriber}.{EventType(event_type).value}"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.exchange}.dlx"

    @property
    def unrouted_exchange(self) -> str:
        return f"{self.exchange}.unrouted"

    @property
    def unrouted_queue(self) -> str:
        return f"{self.exchange}.unrouted"

    def exchange_arguments(self) -> dict[str, Any]:
        """Arguments of the main exchange; also for kombu publishers, which must declare the
        exchange exactly like this."""
        return {"alternate-exchange": self.unrouted_exchange}


def retry_queue_name(queue: str) -> str:
    return f"{queue}.retry"


def dead_letter_queue_name(queue: str) -> str:
    return f"{queue}.dlq"


QUORUM_QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}
UNROUTED_TTL_MS = 7 * 24 * 3600 * 1000
UNROUTED_QUEUE_ARGUMENTS: dict[str, Any] = {
    **QUORUM_QUEUE_ARGUMENTS,
    "x-message-ttl": UNROUTED_TTL_MS,
}


def _dead_lettering_to(exchange: str, routing_key: str) -> dict[str, Any]:
    # at-least-once: the source queue keeps a message until the target queue confirmed it
    # (quorum queues only; it requires the reject-publish overflow behaviour).
    return {
        "x-dead-letter-exchange": exchange,
        "x-dead-letter-routing-key": routing_key,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` handler runs in all; the n-th failure waits ``base_delay * 2**(n-1)``
    seconds, capped at ``max_delay``."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1)))


class BusSettings(BaseSettings):
    """Fields to mix into a service's settings: ``class Settings(ServiceSettings, BusSettings)``.
    They take the service's env prefix (``CONSUMER_AMQP_URL``, ``ORDERS_BUS_EXCHANGE``, ...)."""

    amqp_url: str = DEFAULT_AMQP_URL
    bus_exchange: str = DEFAULT_EXCHANGE
    bus_queue_prefix: str = DEFAULT_QUEUE_PREFIX
    bus_max_attempts: int = Field(default=5, ge=1)
    bus_retry_base_delay_seconds: float = Field(default=1.0, gt=0)
    bus_retry_max_delay_seconds: float = Field(default=300.0, gt=0)
    bus_delivery_limit: int = Field(default=DEFAULT_DELIVERY_LIMIT, ge=1)

    def bus_topology(self) -> Topology:
        return Topology(exchange=self.bus_exchange, queue_prefix=self.bus_queue_prefix)

    def bus_retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.bus_max_attempts,
            base_delay=self.bus_retry_base_delay_seconds,
            max_delay=self.bus_retry_max_delay_seconds,
        )


async def connect(url: str, *, name: str | None = None) -> AbstractRobustConnection:
    """A connection that reconnects by itself and then restores its channels, queues and
    consumers. One per process, opened in the lifespan."""
    properties: dict[str, Any] | None = {"connection_name": name} if name else None
    return await aio_pika.connect_robust(url, client_properties=properties)


# --- topology -------------------------------------------------------------------------------


async def declare_exchange(channel: AbstractChannel, topology: Topology) -> AbstractExchange:
    """Declare the event exchange (and where it puts unroutable messages). Idempotent."""
    unrouted = await channel.declare_exchange(
        topology.unrouted_exchange, ExchangeType.FANOUT, durable=True
    )
    unrouted_queue = await channel.declare_queue(
        topology.unrouted_queue, durable=True, arguments=UNROUTED_QUEUE_ARGUMENTS
    )
    await unrouted_queue.bind(unrouted)
    return await channel.declare_exchange(
        topology.exchange,
        ExchangeType.TOPIC,
        durable=True,
        arguments=topology.exchange_arguments(),
    )


async def declare_subscription(
    channel: AbstractChannel,
    topology: Topology,
    subscriber: str,
    event_type: EventType,
    *,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
) -> AbstractQueue:
    """Declare the exchange and one subscriber's queue for one event type with its retry and
    dead-letter queues; return the main queue. Idempotent while the arguments stay the same."""
    exchange = await declare_exchange(channel, topology)
    name = topology.queue_name(subscriber, event_type)

    dlx = await channel.declare_exchange(
        topology.dead_letter_exchange, ExchangeType.DIRECT, durable=True
    )
    dlq = await channel.declare_queue(
        dead_letter_queue_name(name), durable=True, arguments=QUORUM_QUEUE_ARGUMENTS
    )
    await dlq.bind(dlx, routing_key=name)

    queue = await channel.declare_queue(
        name,
        durable=True,
        arguments={
            **QUORUM_QUEUE_ARGUMENTS,
            "x-delivery-limit": delivery_limit,
            **_dead_lettering_to(topology.dead_letter_exchange, name),
        },
    )
    await queue.bind(exchange, routing_key=EventType(event_type).value)

    # Expired messages go back through the default exchange, which routes by queue name.
    await channel.declare_queue(
        retry_queue_name(name),
        durable=True,
        arguments={**QUORUM_QUEUE_ARGUMENTS, **_dead_lettering_to("", name)},
    )
    return queue


async def delete_subscription(
    channel: AbstractChannel, topology: Topology, subscriber: str, event_type: EventType
) -> None:
    """Delete a subscriber's queues, messages included (tests, decommissioning)."""
    name = topology.queue_name(subscriber, event_type)
    for queue in (name, retry_queue_name(name), dead_letter_queue_name(name)):
        await channel.queue_delete(queue, if_unused=False, if_empty=False)


async def delete_exchanges(channel: AbstractChannel, topology: Topology) -> None:
    """Delete the exchanges and the unrouted queue (tests, decommissioning)."""
    await channel.queue_delete(topology.unrouted_queue, if_unused=False, if_empty=False)
    for exchange in (
        topology.exchange,
        topology.dead_letter_exchange,
        topology.unrouted_exchange,
    ):
        await channel.exchange_delete(exchange, if_unused=False)


# --- publishing -----------------------------------------------------------------------------


def envelope_message(
    envelope: Envelope[Any], headers: Mapping[str, Any] | None = None
) -> aio_pika.Message:
    """The AMQP message for an envelope: persistent JSON, ``message_id`` = event id."""
    return aio_pika.Message(
        envelope.model_dump_json().encode(),
        content_type=JSON,
        content_encoding="utf-8",
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=str(envelope.event_id),
        type=envelope.event_type.value,
        timestamp=envelope.occurred_at,
        headers=dict(headers or {}),
    )


async def publish_envelope(
    target: AbstractExchange | AbstractChannel,
    envelope: Envelope[Any],
    *,
    exchange: str | None = None,
    headers: Mapping[str, Any] | None = None,
    confirm_timeout: float | None = 10.0,
) -> None:
    """Publish ``envelope`` with its event type as routing key and wait for the broker's
    confirm. Returns only once RabbitMQ has taken responsibility for the message (it is on
    disk in every queue it was routed to, or in the unrouted queue). The publish is a span of
    the trace whose context ``headers`` carry (an outbox row's), or else of the current one;
    the message carries that span's context.

    ``target`` is the exchange from ``declare_exchange``, or a channel plus ``exchange=`` (its
    name). The channel must have publisher confirms on (aio-pika's default). Raises
    ``aio_pika.exceptions.DeliveryError`` on a broker nack, ``asyncio.TimeoutError`` after
    ``confirm_timeout``, a connection error if the link dropped: in every case the caller
    must assume it was NOT published and try again later (duplicates are fine; consumers
    de-duplicate by event id).
    Concurrent calls on one channel are fine: confirms are matched per message."""
    if isinstance(target, AbstractChannel):
        if exchange is None:
            raise TypeError("publishing through a channel needs the exchange name")
        target = await target.get_exchange(exchange, ensure=False)
    parent = telemetry.extract_context(headers) if telemetry.has_trace_context(headers) else None
    event_type = envelope.event_type.value
    with telemetry.start_span(
        f"{event_type} publish",
        kind=telemetry.SpanKind.PRODUCER,
        parent=parent,
        attributes={
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "publish",
            "messaging.destination.name": target.name,
            "messaging.rabbitmq.destination.routing_key": event_type,
            "messaging.message.id": str(envelope.event_id),
        },
    ):
        message = envelope_message(envelope, headers)
        # This span's context replaces the one the headers came with.
        telemetry.inject_headers(message.headers)
        # aio-pika's own timeout starts only once the channel is up; on a robust connection
        # that is down it would wait for the reconnect. The outer bound keeps the promise above.
        confirm = await asyncio.wait_for(
            target.publish(
                message,
                routing_key=event_type,
                mandatory=False,
                timeout=confirm_timeout,
            ),
            confirm_timeout,
        )
    if confirm is None:
        raise RuntimeError("the channel has no publisher confirms; open it with the default")


# --- consuming ------------------------------------------------------------------------------


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


def republished(
    message: AbstractIncomingMessage,
    headers: Mapping[str, Any],
    *,
    expiration: float | None = None,
) -> aio_pika.Message:
    """A persistent copy of ``message`` with new headers (the broker's own headers dropped)."""
    clean = {
        key: value for key, value in headers.items() if not key.startswith(_BROKER_HEADER_PREFIXES)
    }
    return aio_pika.Message(
        message.body,
        headers=clean,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        type=message.type,
        timestamp=message.timestamp,
        app_id=message.app_id,
        expiration=expiration,
    )


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
        from order_common.dlq import redrive  # dlq builds on this module

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
