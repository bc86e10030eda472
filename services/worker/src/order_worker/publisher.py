"""Publishing envelopes on the event bus from synchronous code (Celery tasks), with kombu.

Celery's worker is not asyncio, so this is the kombu twin of ``order_common.bus``'s
``publish_envelope``: same exchange arguments, same message properties, and a return only once
RabbitMQ confirmed the message (``confirm_publish``)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import amqp.exceptions
import kombu.exceptions
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Producer
from opentelemetry.trace import Span, use_span

from order_common.bus import JSON, UNROUTED_QUEUE_ARGUMENTS, Topology, publish_span_attributes
from order_common.events import Envelope
from order_common.telemetry import SpanKind, inject_headers, start_span, tracer

# A dropped connection is reopened at once and the publish tried again; an outage longer
# than that fails the publish, and the task retries it with back-off (order_worker.tasks).
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
_BATCH_ATTEMPTS = 3


class BusPublisher:
    """One connection, opened on first use and kept; one per worker process (never shared
    across a fork). A lock makes it safe for a threaded pool too.

    ``publish`` waits for each message's confirm; ``publish_many`` sends a batch on a second
    connection whose channel is in confirm mode and waits once for all the confirms (they
    are matched by delivery tag), so a batch costs one round trip, not one per message."""

    def __init__(self, amqp_url: str, topology: Topology, *, confirm_timeout: float = 10.0) -> None:
        self._connection = Connection(
            amqp_url, transport_options={"confirm_publish": True}, connect_timeout=5
        )
        self._exchange = Exchange(
            topology.exchange,
            type="topic",
            durable=True,
            arguments=topology.exchange_arguments(),
        )
        # Declared with the exchange so that its alternate exchange always has somewhere to
        # put what no queue is bound for (see order_common.bus).
        self._unrouted = Queue(
            topology.unrouted_queue,
            Exchange(topology.unrouted_exchange, type="fanout", durable=True),
            durable=True,
            queue_arguments=UNROUTED_QUEUE_ARGUMENTS,
        )
        self._confirm_timeout = confirm_timeout
        self._producer: Producer | None = None
        self._lock = threading.Lock()
        self._amqp_url = amqp_url
        self._batch_connection: Connection | None = None
        self._batch_channel: Any = None  # py-amqp's Channel, in confirm mode
        self._batch_producer: Producer | None = None
        self._sent = 0  # messages published on the batch channel: the last delivery tag
        self._unconfirmed: set[int] = set()  # delivery tags the broker has not answered yet
        self._refused: set[int] = set()  # ... and the ones it answered with a nack

    def publish(self, envelope: Envelope[Any], headers: Mapping[str, Any] | None = None) -> None:
        """Publish and wait for the broker's confirm; raises (kombu/amqp errors) if it was not
        confirmed, after a few reconnecting retries. Like ``publish_envelope``, the publish is
        a span of the current trace (the task's) and the message carries its context."""
        event_type = envelope.event_type.value
        with (
            start_span(
                f"{event_type} publish",
                kind=SpanKind.PRODUCER,
                attributes=publish_span_attributes(self._exchange.name, envelope),
            ),
            self._lock,
        ):
            message_headers = dict(headers or {})
            inject_headers(message_headers)
            if self._producer is None:
                self._producer = Producer(self._connection)
            self._producer.publish(
                envelope.model_dump_json().encode(),
                **self._message_options(envelope, message_headers),
                retry=True,
                retry_policy=_RETRY_POLICY,
                confirm_timeout=self._confirm_timeout,
            )

    def _message_options(
        self, envelope: Envelope[Any], headers: Mapping[str, Any]
    ) -> dict[str, Any]:
        """What every report is published with, one at a time or in a batch: routed by its
        event type, persistent, JSON, identified by its event id."""
        return {
            "exchange": self._exchange,
            "routing_key": envelope.event_type.value,
            "declare": [self._unrouted, self._exchange],
            "content_type": JSON,
            "content_encoding": "utf-8",
            "delivery_mode": 2,
            "headers": headers,
            "message_id": str(envelope.event_id),
            "type": envelope.event_type.value,
        }

    def publish_many(
        self, reports: Sequence[tuple[Envelope[Any], Span | None]]
    ) -> list[BaseException | None]:
        """Publish each envelope (as a span of the trace of the span paired with it) and wait
        for the broker's confirms of all of them; what each one failed with (None: confirmed).
        A dropped connection is reopened and the unconfirmed ones are sent again, twice at
        most: a message is reported failed only once that did not help."""
        outcomes: list[BaseException | None] = [None] * len(reports)
        pending = list(range(len(reports)))
        with self._lock:
            # The whole call, retries included, within one confirm timeout (a connect that
            # starts before it may take its own 5 s): a broker that does not answer fails the
            # batch's reports well within the task's time limit, and Celery's retry, with its
            # back-off, takes over.
            deadline = time.monotonic() + self._confirm_timeout
            for attempt in range(_BATCH_ATTEMPTS):
                try:
                    refused = self._publish_confirmed(
                        [reports[i] for i in pending], deadline=deadline
                    )
                except _CONNECTION_ERRORS as exc:
                    self._drop_batch_connection()
                    if attempt == _BATCH_ATTEMPTS - 1 or time.monotonic() >= deadline:
                        for index in pending:
                            outcomes[index] = exc
                        break
                    time.sleep(min(0.5 * attempt, 1.0))
                    continue
                for position, index in enumerate(pending):
                    if position in refused:
                        outcomes[index] = amqp.exceptions.MessageNacked()
                break
        return outcomes

    def _publish_confirmed(
        self, reports: Sequence[tuple[Envelope[Any], Span | None]], *, deadline: float
    ) -> set[int]:
        """Publish on the confirm channel, then wait for every confirm until ``deadline``
        (``time.monotonic()``); the positions the broker refused (nacked)."""
        producer = self._batch_producer_ready()
        first = self._sent + 1
        spans = []
        try:
            for envelope, parent in reports:
                within = contextlib.nullcontext() if parent is None else use_span(parent)
                with within:
                    span = _publish_span(self._exchange.name, envelope)
                spans.append(span)
                with use_span(span, end_on_exit=False):
                    headers = inject_headers()
                producer.publish(
                    envelope.model_dump_json().encode(),
                    **self._message_options(envelope, headers),
                )
                self._sent += 1
                self._unconfirmed.add(self._sent)
            assert self._batch_connection is not None
            while self._unconfirmed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._unconfirmed)} publishes not confirmed")
                self._batch_connection.drain_events(timeout=remaining)
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.end()
            raise
        refused = {tag - first for tag in self._refused if tag >= first}
        self._refused.clear()
        for span in spans:
            span.end()
        return refused

    def _batch_producer_ready(self) -> Producer:
        if self._batch_producer is None:
            connection = Connection(self._amqp_url, connect_timeout=5)
            self._batch_connection = connection
            connection.ensure_connection(max_retries=1, interval_start=0)
            channel: Any = connection.default_channel  # py-amqp's, typed as kombu's abstract one
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            self._batch_channel = channel
            self._sent = 0
            self._unconfirmed.clear()
            self._refused.clear()
            self._batch_producer = Producer(channel)
        return self._batch_producer

    def _answered(self, delivery_tag: int, multiple: bool) -> set[int]:
        done = {t for t in self._unconfirmed if t <= delivery_tag} if multiple else {delivery_tag}
        self._unconfirmed -= done
        return done

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._answered(delivery_tag, multiple)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._refused |= self._answered(delivery_tag, multiple)

    def _drop_batch_connection(self) -> None:
        connection, self._batch_connection = self._batch_connection, None
        self._batch_producer = self._batch_channel = None
        if connection is not None:
            connection.collect()  # without network: the link may be gone

    def close(self) -> None:
        with self._lock:
            self._producer = None
            self._connection.release()
            if self._batch_connection is not None:
                self._batch_connection.release()
            self._drop_batch_connection()


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    amqp.exceptions.ConnectionError,
    amqp.exceptions.ChannelError,
    kombu.exceptions.OperationalError,
    OSError,  # ConnectionError, TimeoutError (socket.timeout) and the rest of the socket's
)


def _publish_span(exchange: str, envelope: Envelope[Any]) -> Span:
    return tracer().start_span(
        f"{envelope.event_type.value} publish",
        kind=SpanKind.PRODUCER,
        attributes=publish_span_attributes(exchange, envelope),
    )
