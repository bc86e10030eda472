"""Publishing the outbox: one batch at a time, for the relay (``orders_service.relay``).

Publishing. A batch of the oldest unpublished outbox events is claimed with ``FOR UPDATE SKIP
LOCKED`` and published at once on one channel with publisher confirms (persistent messages,
routing key = event type). In the same transaction the events the broker confirmed are marked
published; then it commits. The row locks are held across the publish, so a second relay
skips those rows: any number of replicas publish each event once. A crash between the
confirm and the commit publishes an event again, which is why every consumer de-duplicates
by event id (delivery is at least once, never at most once).

Failures. An event the broker did not confirm stays in the outbox and goes with the next
batch; the confirmed ones of its batch are marked all the same. A failure of the row's own (a
payload that is not a valid envelope, headers that cannot be encoded: ``OWN_ERRORS``) counts
an attempt in the row and keeps its error (``last_error``); whatever the broker or the link
answered (a nack, no confirm in time, the link dropped) is an outage and costs nothing. After
``relay_max_attempts`` failures of its own the row is dead-lettered (``dead_lettered_at``),
logged with its reason and left out of every later batch, so a poison row cannot hold the
others back; ``orders-service dlq show`` lists such rows (``make dlq``) and ``orders-service
dlq redrive`` puts them back with their attempts reset. The relay backs off after a batch that
met an outage (having marked what did go out), never for a row's own failure."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from aio_pika.abc import AbstractExchange
from aiormq.exceptions import AMQPError, DeliveryError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from order_common.bus import publish_envelope
from order_common.events import EventType, parse_envelope
from order_common.telemetry import untraced
from orders_service.metrics import EVENTS_PUBLISHED, OUTBOX_DEAD_LETTERED, PUBLISH_FAILURES
from orders_service.models import OutboxEvent
from orders_service.uow import OrdersUnitOfWork

logger = logging.getLogger(__name__)

# A publish the broker has not confirmed by then counts as failed (and is retried later).
CONFIRM_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_ATTEMPTS = 10  # the default of ORDERS_RELAY_MAX_ATTEMPTS
_MAX_ERROR_LENGTH = 2000


@dataclass(frozen=True)
class BatchResult:
    claimed: int = 0
    published: int = 0
    failed: int = 0  # not published, for whatever reason (dead-lettered included)
    outage: int = 0  # of those, failed by an outage, not on their own (no attempt counted)
    dead_lettered: int = 0  # failed on its own content for the last allowed time: set aside


# A row's own failure is one that the row's content causes wherever it is sent: its payload is
# not a valid envelope, or its headers cannot be encoded. Only those count towards
# ``relay_max_attempts``. Everything the broker or the link answers is an outage, whatever other
# rows of the batch did: RabbitMQ nacks every publish to a queue that cannot take messages (a
# quorum queue without its quorum, an overflow policy) while other queues take theirs, and a
# dropped link fails the publishes in flight with whatever the client has at hand (a bare
# Exception, a cancellation, a channel error). An unknown error is an outage too: retrying it
# for ever costs a warning a batch, dead-lettering it could park every order for a human.
OWN_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError)


def is_own_failure(exc: BaseException) -> bool:
    """Whether a failed publish counts against its row (see ``OWN_ERRORS``)."""
    if isinstance(exc, DeliveryError | AMQPError | OSError | TimeoutError):
        return False
    return isinstance(exc, OWN_ERRORS)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_LENGTH]


class OutboxPublisher:
    """Publishes one batch of the outbox at a time (see the module's docstring)."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        exchange: AbstractExchange,
        *,
        batch_size: int,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        confirm_timeout: float = CONFIRM_TIMEOUT_SECONDS,
    ) -> None:
        self._session_factory = session_factory
        self._exchange = exchange
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self._confirm_timeout = confirm_timeout

    async def publish_batch(self) -> BatchResult:
        # The claim and the bookkeeping run every poll: untraced. Each publish is traced, in
        # the trace of the request that wrote its event (see ``publish_envelope``).
        with untraced():
            return await self._publish_batch()

    async def _publish_batch(self) -> BatchResult:
        async with OrdersUnitOfWork(self._session_factory) as uow:
            rows = await uow.outbox.claim_unpublished(self.batch_size)
            if not rows:
                return BatchResult()
            # Confirms are matched per message, so the batch costs about one round trip.
            outcomes = await asyncio.gather(
                *(self._publish(row) for row in rows), return_exceptions=True
            )
            results = list(zip(rows, outcomes, strict=True))
            published = [row for row, outcome in results if outcome is None]
            failures = [
                (row, outcome) for row, outcome in results if isinstance(outcome, BaseException)
            ]
            now = datetime.now(UTC)
            if published:
                await uow.outbox.mark_published([row.id for row in published], now)
                announced = [
                    uuid.UUID(str(row.payload["data"]["order_id"]))
                    for row in published
                    if row.event_type == EventType.NEW_ORDER.value
                ]
                await uow.orders.mark_announced(announced, now)
            own_failures = {row.id: describe(exc) for row, exc in failures if is_own_failure(exc)}
            dead = await uow.outbox.count_failed_attempts(
                own_failures, max_attempts=self.max_attempts, now=now
            )
            await uow.commit()
        for row, outcome in results:
            counter = PUBLISH_FAILURES if isinstance(outcome, BaseException) else EVENTS_PUBLISHED
            counter.labels(event_type=row.event_type).inc()
        for row in rows:
            if row.id in dead:
                OUTBOX_DEAD_LETTERED.labels(event_type=row.event_type).inc()
                logger.error(
                    "outbox event %s %s dead-lettered after %d failed attempts (orders-service "
                    "dlq shows it, orders-service dlq redrive puts it back): %s",
                    row.event_type,
                    row.id,
                    dead[row.id],
                    own_failures[row.id],
                    extra={
                        "event_id": str(row.id),
                        "attempts": dead[row.id],
                        "reason": own_failures[row.id],
                    },
                )
        if failures:
            row, exc = failures[0]
            logger.warning(
                "%d of %d outbox events not confirmed by the broker (%d for their own content, "
                "%d by an outage); they stay in the outbox for the next attempt "
                "(first: %s %s: %s)",
                len(failures),
                len(rows),
                len(own_failures),
                len(failures) - len(own_failures),
                row.event_type,
                row.id,
                describe(exc),
                extra={"event_id": str(row.id)},
            )
        logger.debug("published %d outbox events", len(published))
        return BatchResult(
            claimed=len(rows),
            published=len(published),
            failed=len(failures),
            outage=len(failures) - len(own_failures),
            dead_lettered=len(dead),
        )

    async def _publish(self, row: OutboxEvent) -> None:
        event = parse_envelope(json.dumps(row.payload))
        # The outer bound also covers a robust channel waiting for its connection to return.
        await asyncio.wait_for(
            publish_envelope(
                self._exchange,
                event,
                headers=row.headers,
                confirm_timeout=self._confirm_timeout,
            ),
            self._confirm_timeout,
        )
