"""Publishing envelopes on the event bus from synchronous code (Celery tasks), with kombu.

Celery's worker is not asyncio, so this is the kombu twin of ``order_common.bus``'s
``publish_envelope``: same exchange arguments, same message properties, and a return only once
RabbitMQ confirmed the message (``confirm_publish``)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.messaging import Producer

from order_common.bus import JSON, UNROUTED_QUEUE_ARGUMENTS, Topology, publish_span_attributes
from order_common.events import Envelope
from order_common.telemetry import SpanKind, inject_headers, start_span

# A dropped connection is reopened at once and the publish tried again; an outage longer
# than that fails the publish, and the task retries it with back-off (order_worker.tasks).
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


class BusPublisher:
    """One connection, opened on first use and kept; one per worker process (never shared
    across a fork). A lock makes it safe for a threaded pool too."""

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
                exchange=self._exchange,
                routing_key=envelope.event_type.value,
                declare=[self._unrouted, self._exchange],
                content_type=JSON,
                content_encoding="utf-8",
                delivery_mode=2,
                headers=message_headers,
                message_id=str(envelope.event_id),
                type=envelope.event_type.value,
                retry=True,
                retry_policy=_RETRY_POLICY,
                confirm_timeout=self._confirm_timeout,
            )

    def close(self) -> None:
        with self._lock:
            self._producer = None
            self._connection.release()
