"""Consuming from the event bus: ``Subscriber`` runs a handler on each message of one
subscriber's queue, with retries and back-off, a dead-letter queue for what keeps failing, and a
graceful stop. Running the handlers on a batch and waiting out outages is
``order_common.handling``; the topology and publishing it builds on are in
``order_common.bus``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    ConsumerTag,
)
from opentelemetry.trace import Span, use_span

from order_common import telemetry
from order_common.aio import RetryPolicy
from order_common.bus import (
    DEFAULT_DELIVERY_LIMIT,
    DeadLetterReason,
    RejectMessage,
    Topology,
    declare_subscription,
)
from order_common.delivery import BatchHandler, Delivery, Handled, Handler, Outcome
from order_common.events import EventType, parse_envelope
from order_common.handling import OUTAGE_RETRY, Abandoned, HandlerRunner, Pending
from order_common.metrics import BUS_EVENTS_CONSUMED, BUS_HANDLING_DURATION, BUS_PAUSED, BUS_RESULTS
from order_common.outages import is_dependency_outage
from order_common.redelivery import Redelivery, attempts_so_far

logger = logging.getLogger(__name__)


class Subscriber:
    """Runs ``handler`` on each ``event_type`` message of ``subscriber``'s queue (or
    ``batch_handler`` on many at once).

    - success: ack.
    - the body is not a valid envelope of ``event_type`` (poison), or the handler raised
      ``RejectMessage``: to the dead-letter queue at once, with the reason, then ack.
    - a dependency is unreachable (``is_outage``, by default
      ``order_common.outages.is_dependency_outage``): nothing is spent. The handler runs
      again after a back-off (``outage_retry``) until it gets through, and the subscriber
      takes no new message meanwhile; consumption resumes once the dependency is back.
    - any other exception: to the retry queue with the next back-off delay and the attempt
      count in ``x-attempts``, then ack; after ``retry.max_attempts`` runs, to the dead-letter
      queue with the reason instead. A ``batch_handler`` that raises so for a batch of several
      runs again on each delivery alone: only a delivery that fails on its own spends an
      attempt, not the whole batch.
    - every republish waits for the broker's confirm before the ack, so a crash in between
      repeats the message rather than losing it; if settling fails, the messages are
      returned to the queue (nack with requeue), where ``x-delivery-limit`` bounds them.

    Batches: the broker keeps up to ``prefetch`` messages in hand; whatever has arrived (up
    to ``batch_size``) is handled together -- ``handler`` concurrently on each, or
    ``batch_handler`` once for all -- and then acked at once (``multiple=True`` on the last).
    One batch is settled at a time, in delivery order, so a multiple ack never covers a
    message still being handled. Handlers must be idempotent: delivery is at least once.
    ``stop()`` cancels the consumer, lets what was delivered finish (an outage wait ends at
    once), then closes the channel; a message not yet settled goes back to the queue.

    Tracing: each message gets its ``{event_type} process`` span, in its own trace; a batch
    handler runs in the span of the batch's first message, and finds each message's own span
    on its ``Delivery.span`` for the work done for that message alone.

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
        handler: Handler | None = None,
        *,
        batch_handler: BatchHandler | None = None,
        retry: RetryPolicy | None = None,
        outage_retry: RetryPolicy | None = None,
        is_outage: Callable[[BaseException], bool] = is_dependency_outage,
        prefetch: int = 16,
        batch_size: int | None = None,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        publish_timeout: float = 10.0,
    ) -> None:
        if (handler is None) == (batch_handler is None):
            raise TypeError("give a handler or a batch_handler")
        self._connection = connection
        self.topology = topology
        self.subscriber = subscriber
        self.event_type = EventType(event_type)
        self.retry = retry or RetryPolicy()
        self._prefetch = prefetch
        self._batch_size = max(1, min(batch_size or prefetch, prefetch))
        self._delivery_limit = delivery_limit
        self._publish_timeout = publish_timeout
        self.queue_name = topology.queue_name(subscriber, event_type)
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._redelivery: Redelivery | None = None
        self._consumer_tag: ConsumerTag | None = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._runner = HandlerRunner(
            handler=handler,
            batch_handler=batch_handler,
            is_outage=is_outage,
            outage_retry=outage_retry or OUTAGE_RETRY,
            subscriber=subscriber,
            event_type=self.event_type.value,
            queue_name=self.queue_name,
            stopping=self._stopping,
        )

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
            self._redelivery = Redelivery(
                channel,
                await channel.get_exchange(self.topology.dead_letter_exchange, ensure=False),
                self.queue_name,
                publish_timeout=self._publish_timeout,
            )
            self._channel = channel
            for result in BUS_RESULTS:  # every series exists from the start, at 0
                BUS_EVENTS_CONSUMED.labels(self.subscriber, self.event_type.value, result)
            BUS_PAUSED.labels(self.subscriber, self.event_type.value).set(0)
            self._loop = asyncio.create_task(self._run(), name=f"subscriber {self.queue_name}")
            self._consumer_tag = await self._queue.consume(self._on_message)
        except BaseException:
            # e.g. PRECONDITION_FAILED: the queue exists with other arguments.
            if self._loop is not None:
                self._loop.cancel()
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        logger.info("consuming %s", self.queue_name, extra={"queue": self.queue_name})

    async def stop(self, grace_period: float = 30.0) -> None:
        """Stop taking messages, let the delivered ones finish (up to ``grace_period`` s; after
        that they are cancelled and their messages go back to the queue), close."""
        if self._queue is not None and self._consumer_tag is not None:
            with contextlib.suppress(Exception):  # a dead channel has no consumer to cancel
                await self._queue.cancel(self._consumer_tag)
            self._consumer_tag = None
        self._stopping.set()
        # Deliveries that crossed the cancel are queued before the end marker: they are
        # handled too.
        await asyncio.sleep(0)
        self._inbox.put_nowait(None)
        if self._loop is not None:
            done, _ = await asyncio.wait({self._loop}, timeout=grace_period)
            if not done:
                logger.warning(
                    "messages still in hand at shutdown of %s; they will be redelivered",
                    self.queue_name,
                )
                self._loop.cancel()
                await asyncio.gather(self._loop, return_exceptions=True)
            self._loop = None
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None
        logger.info("stopped consuming %s", self.queue_name, extra={"queue": self.queue_name})

    async def __aenter__(self) -> Subscriber:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    @property
    def _redeliver(self) -> Redelivery:
        assert self._redelivery is not None, "start() first"
        return self._redelivery

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # Deliveries queue up here (at most `prefetch`, the broker sends no more unacked);
        # one loop takes them in delivery order, a batch at a time (see `_run`).
        self._inbox.put_nowait(message)

    async def _run(self) -> None:
        """Take what has arrived (up to ``batch_size``), settle it, repeat. Batches are settled
        one after the other in delivery order, so when one is acked with ``multiple=True``
        every earlier delivery of its channel is settled already."""
        while True:
            first = await self._inbox.get()
            if first is None:  # stop() was called and everything before it is settled
                return
            batch = [first]
            while len(batch) < self._batch_size and not self._inbox.empty():
                message = self._inbox.get_nowait()
                if message is None:
                    self._inbox.put_nowait(None)  # settle this batch, then stop
                    break
                batch.append(message)
            try:
                await self._settle_batch(batch)
            except Abandoned:
                # Stopped during an outage: unsettled, these go back to the queue as it closes.
                return
            except Exception:
                # Only settling can fail here (the broker or the link): hand the batch back.
                logger.exception(
                    "could not settle %d messages of %s; returning them to the queue",
                    len(batch),
                    self.queue_name,
                )
                for message in batch:
                    with contextlib.suppress(Exception):
                        await message.nack(requeue=True)

    def _parent_context(self, headers: Mapping[str, Any]) -> Any:
        """The message's trace context, or the current one when it already continues it."""
        carried = telemetry.extract_context(headers)
        current = telemetry.current_trace_ids()
        carried_ids = telemetry.trace_ids(carried)
        if current is not None and (carried_ids is None or carried_ids[0] == current[0]):
            return None
        return carried

    def _start_span(self, message: AbstractIncomingMessage, headers: Mapping[str, Any]) -> Span:
        return telemetry.tracer().start_span(
            f"{self.event_type.value} process",
            context=self._parent_context(headers),
            kind=telemetry.SpanKind.CONSUMER,
            attributes=telemetry.messaging_attributes(
                "rabbitmq",
                "process",
                self.queue_name,
                message_id=message.message_id or "",
                extra={"messaging.consumer.group.name": self.subscriber},
            ),
        )

    async def _settle_batch(self, batch: list[AbstractIncomingMessage]) -> None:
        start = time.perf_counter()
        spans: list[Span] = []
        results: list[tuple[Span, str]] = []
        pending: list[Pending] = []
        try:
            for message in batch:
                headers = dict(message.headers or {})
                span = self._start_span(message, headers)
                spans.append(span)
                attempt = attempts_so_far(headers) + 1
                try:
                    envelope = parse_envelope(message.body)
                    if envelope.event_type != self.event_type:
                        raise ValueError(
                            f"expected a {self.event_type} event, got {envelope.event_type}"
                        )
                except ValueError as exc:  # pydantic's ValidationError included
                    with use_span(span, end_on_exit=False):
                        await self._redeliver.dead_letter(
                            message, headers, DeadLetterReason.POISON, exc, attempt - 1
                        )
                    results.append((span, "dead_lettered"))
                    continue
                delivery = Delivery(
                    envelope, attempt, headers, redelivered=bool(message.redelivered), span=span
                )
                pending.append(Pending(message, headers, delivery, span))

            if pending:
                outcomes = await self._runner.handle_through_outages(pending)
                for item, outcome in zip(pending, outcomes, strict=True):
                    with use_span(item.span, end_on_exit=False):
                        result = await self._conclude(item, outcome)
                    results.append((item.span, result))
            await self._ack(batch)
            elapsed = time.perf_counter() - start
            for span, result in results:
                span.set_attribute("order_platform.result", result)
                BUS_EVENTS_CONSUMED.labels(self.subscriber, self.event_type.value, result).inc()
                with use_span(span, end_on_exit=False):
                    BUS_HANDLING_DURATION.labels(self.subscriber, self.event_type.value).observe(
                        elapsed, exemplar=telemetry.exemplar()
                    )
        finally:
            for span in spans:
                span.end()

    async def _ack(self, batch: list[AbstractIncomingMessage]) -> None:
        """One ack per channel for the whole batch: the last delivery with ``multiple=True``.
        (A robust connection that reconnected mid-batch gave later messages a new channel.)"""
        last: dict[int, AbstractIncomingMessage] = {}
        for message in batch:
            key = id(message.channel)
            if key not in last or message.delivery_tag > last[key].delivery_tag:  # type: ignore[operator]
                last[key] = message
        for message in last.values():
            await message.ack(multiple=len(batch) > 1)

    async def _conclude(self, item: Pending, outcome: Outcome) -> str:
        """Settle one message by its outcome (republishing it if it failed); its result."""
        if not isinstance(outcome, BaseException):
            return Handled(outcome or Handled.OK).value
        if not isinstance(outcome, RejectMessage):
            item.span.record_exception(outcome)
            item.span.set_status(telemetry.error_status(outcome))
        return await self._redeliver.failed(
            item.message,
            item.headers,
            outcome,
            attempt=item.delivery.attempt,
            retry=self.retry,
            event_id=str(item.delivery.envelope.event_id),
        )
