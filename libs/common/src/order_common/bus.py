"""The event bus on RabbitMQ: topology, publishing with confirms, and consuming with retries
and a dead-letter queue. Every service that touches the bus goes through this module, so they
all declare the same exchanges and queues with the same arguments (RabbitMQ refuses a second
declaration whose arguments differ).

Topology, for ``Topology(exchange="order-platform.events", queue_prefix="order-platform")``:

- ``order-platform.events``: durable topic exchange; the routing key is the event type. Its
  alternate exchange ``order-platform.events.unrouted`` (fanout) keeps what no queue is bound
  for in the quorum queue ``order-platform.events.unrouted`` -- e.g. a ``new_order`` published
  before any subscriber declared its queue -- instead of the broker dropping it. They wait
  there for a re-drive for 7 days (an event type nobody subscribes to must not pile up); each
  process on the bus re-drives those of its own event types when it starts
  (``order_common.dlq.adopt_unrouted``), so its first start adopts what it missed.
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
``order_common.subscriber.Subscriber``, which declares its own queues idempotently when it
starts.

Tracing: messages carry the W3C trace context in their headers (``traceparent``). A publish
continues the context found in the headers it is given (the outbox keeps the one of the request
that wrote the event), else the current one; ``Subscriber`` runs each handler in a span that
continues the message's context. Metrics: ``bus_events_consumed_total`` by result and
``bus_event_handling_seconds`` (``order_common.metrics``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
    DeliveryMode,
    ExchangeType,
)
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings

from order_common import telemetry
from order_common.aio import RetryPolicy, connect_with_retry
from order_common.events import Envelope, EventType
from order_common.settings import SETTINGS_CONFIG

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


class BusSettings(BaseSettings):
    """Fields to mix into a service's settings: ``class Settings(ServiceSettings, BusSettings)``.
    They take the service's env prefix (``CONSUMER_AMQP_URL``, ``ORDERS_BUS_EXCHANGE``, ...)."""

    model_config = SETTINGS_CONFIG

    amqp_url: SecretStr = SecretStr(DEFAULT_AMQP_URL)
    bus_exchange: str = DEFAULT_EXCHANGE
    bus_queue_prefix: str = DEFAULT_QUEUE_PREFIX
    bus_max_attempts: int = Field(default=5, ge=1)
    bus_retry_base_delay_seconds: float = Field(default=1.0, gt=0)
    bus_retry_max_delay_seconds: float = Field(default=300.0, gt=0)
    bus_delivery_limit: int = Field(default=DEFAULT_DELIVERY_LIMIT, ge=1)
    # While a dependency is unreachable a subscriber retries its handler with this back-off
    # (from half a second up to this cap), for as long as the outage lasts.
    bus_outage_retry_max_delay_seconds: float = Field(default=10.0, gt=0)

    def bus_topology(self) -> Topology:
        return Topology(exchange=self.bus_exchange, queue_prefix=self.bus_queue_prefix)

    def bus_retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.bus_max_attempts,
            base_delay=self.bus_retry_base_delay_seconds,
            max_delay=self.bus_retry_max_delay_seconds,
        )

    def bus_outage_retry_policy(self) -> RetryPolicy:
        """The back-off of a subscriber waiting out an unreachable dependency."""
        return RetryPolicy(
            max_attempts=1, base_delay=0.5, max_delay=self.bus_outage_retry_max_delay_seconds
        )


async def connect(url: str, *, name: str | None = None) -> AbstractRobustConnection:
    """A connection that reconnects by itself and then restores its channels, queues and
    consumers. One per process, opened in the lifespan. Its first connection is not retried:
    a process starting up uses ``connect_retrying``."""
    properties: dict[str, Any] | None = {"connection_name": name} if name else None
    return await aio_pika.connect_robust(url, client_properties=properties)


async def connect_retrying(
    url: str, *, name: str | None = None, stop: asyncio.Event
) -> AbstractRobustConnection | None:
    """``connect``, retried with back-off until the broker answers (``None`` if ``stop`` came
    first): how every process on the bus makes its first connection. Once connected, the
    robust connection reconnects by itself."""
    return await connect_with_retry(lambda: connect(url, name=name), what="RabbitMQ", stop=stop)


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


def publish_span_attributes(exchange: str, envelope: Envelope[Any]) -> dict[str, str]:
    """The attributes of the span of one event's publish (here and in the worker's kombu
    publisher): the exchange, the event type as routing key, the event id."""
    return telemetry.messaging_attributes(
        "rabbitmq",
        "publish",
        exchange,
        message_id=str(envelope.event_id),
        extra={"messaging.rabbitmq.destination.routing_key": envelope.event_type.value},
    )


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
        attributes=publish_span_attributes(target.name, envelope),
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
