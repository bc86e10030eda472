"""The outbox relay: publishes the outbox to RabbitMQ. Its process is ``orders_service.events``.

Publishing. A batch of the oldest unpublished outbox events is claimed with ``FOR UPDATE SKIP
LOCKED`` and published at once on one channel with publisher confirms (persistent messages,
routing key = event type). In the same transaction the events the broker confirmed are marked
published and the others count a failed attempt; then it commits. The row locks are held
across the publish, so a second relay skips those rows: any number of replicas publish each
event once. A crash between the confirm and the commit publishes an event again, which is why
every consumer de-duplicates by event id (delivery is at least once, never at most once).

Waking. A dedicated PostgreSQL connection LISTENs on ``orders_outbox`` (the orders service
NOTIFYs it when an order commits), and the relay also polls every
``relay_poll_interval_seconds``, so a lost notification or a lost LISTEN connection delays an
event by one interval at most. After a full batch it goes on at once.

Broker outages. The API never touches RabbitMQ, so orders keep coming into the outbox. The
process connects with back-off until the broker answers; once connected, aio-pika's robust
connection reconnects by itself and the relay claims nothing while it is away. When it is back
the backlog drains, oldest first.

Retention. Published events are deleted ``outbox_retention_hours`` after publication, in small
batches, every ``outbox_cleanup_interval_seconds``; unpublished ones are never deleted.

Repair. Publishing a `new_order` stamps its order's ``announced_at``. Every
``reannounce_interval_seconds`` the orders still unprocessed ``reannounce_after_seconds`` after
that are announced again under a new event id: a task that Celery's Redis broker dropped in
flight is asked for once more (``service.reannounce``)."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from aio_pika.abc import AbstractExchange, AbstractRobustChannel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from order_common.aio import CONNECT_RETRY, connect_with_retry, first_set, wait_event
from order_common.bus import publish_envelope
from order_common.db import asyncpg_dsn
from order_common.events import EventType, parse_envelope
from order_common.telemetry import untraced
from orders_service.metrics import (
    EVENTS_PUBLISHED,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_AGE,
    PUBLISH_FAILURES,
)
from orders_service.models import OutboxEvent
from orders_service.repository import OUTBOX_CHANNEL
from orders_service.service import purge_expired_idempotency_keys, reannounce
from orders_service.settings import Settings
from orders_service.uow import OrdersUnitOfWork

logger = logging.getLogger(__name__)

# A publish the broker has not confirmed by then counts as failed (and is retried later).
CONFIRM_TIMEOUT_SECONDS = 10.0
# After a failed batch (the database or the broker), the same back-off as a first connection.
BATCH_RETRY = CONNECT_RETRY
_PURGE_BATCH = 1000
# How often the backlog gauges are refreshed (at most; the poll interval if shorter).
BACKLOG_REFRESH_SECONDS = 5.0


# --- publishing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchResult:
    claimed: int = 0
    published: int = 0
    failed: int = 0


class OutboxPublisher:
    """Publishes one batch of the outbox at a time (see the module's docstring)."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        exchange: AbstractExchange,
        *,
        batch_size: int,
        confirm_timeout: float = CONFIRM_TIMEOUT_SECONDS,
    ) -> None:
        self._session_factory = session_factory
        self._exchange = exchange
        self.batch_size = batch_size
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
            published = [
                row.id for row, outcome in zip(rows, outcomes, strict=True) if outcome is None
            ]
            failures = [
                (row, outcome)
                for row, outcome in zip(rows, outcomes, strict=True)
                if isinstance(outcome, BaseException)
            ]
            if published:
                now = datetime.now(UTC)
                await uow.outbox.mark_published(published, now)
                announced = [
                    uuid.UUID(str(row.payload["data"]["order_id"]))
                    for row, outcome in zip(rows, outcomes, strict=True)
                    if outcome is None and row.event_type == EventType.NEW_ORDER.value
                ]
                await uow.orders.mark_announced(announced, now)
            if failures:
                await uow.outbox.count_failed_attempt([row.id for row, _ in failures])
            await uow.commit()
        for row, outcome in zip(rows, outcomes, strict=True):
            counter = PUBLISH_FAILURES if isinstance(outcome, BaseException) else EVENTS_PUBLISHED
            counter.labels(event_type=row.event_type).inc()
        if failures:
            row, exc = failures[0]
            logger.warning(
                "%d of %d outbox events not confirmed by the broker; they stay in the outbox "
                "for the next attempt (first: %s %s: %s)",
                len(failures),
                len(rows),
                row.event_type,
                row.id,
                f"{type(exc).__name__}: {exc}",
                extra={"event_id": str(row.id), "attempts": row.attempts + 1},
            )
        logger.debug("published %d outbox events", len(published))
        return BatchResult(claimed=len(rows), published=len(published), failed=len(failures))

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


async def purge_published(
    session_factory: async_sessionmaker[AsyncSession],
    retention: timedelta,
    *,
    now: datetime | None = None,
    batch: int = _PURGE_BATCH,
) -> int:
    """Delete the events published more than ``retention`` ago; return how many."""
    cutoff = (now or datetime.now(UTC)) - retention
    total = 0
    while True:
        async with OrdersUnitOfWork(session_factory) as uow:
            deleted = await uow.outbox.delete_published_before(cutoff, batch)
            await uow.commit()
        total += deleted
        if deleted < batch:
            return total


class OutboxRelay:
    """Runs the publisher whenever there may be work, listens for NOTIFY, and purges."""

    def __init__(
        self,
        settings: Settings,
        session_factory: async_sessionmaker[AsyncSession],
        publisher: OutboxPublisher,
        channel: AbstractRobustChannel,
    ) -> None:
        self._settings = settings
        self._session_factory = session_factory
        self._publisher = publisher
        self._channel = channel
        self._wake = asyncio.Event()
        # Set while a LISTEN connection is up (NOTIFY wakes the relay), clear while it polls.
        self.listening = asyncio.Event()
        self.published = 0

    def wake(self, *_: object) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; the batch in hand is finished, not abandoned."""

        async def wake_on_stop() -> None:
            await stop.wait()
            self.wake()

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(wake_on_stop())
            tasks.create_task(self._publish_forever(stop))
            tasks.create_task(self._listen_forever(stop))
            tasks.create_task(self._purge_forever(stop))
            tasks.create_task(self._reannounce_forever(stop))
            tasks.create_task(self._measure_forever(stop))

    async def _publish_forever(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            # Cleared before claiming: a NOTIFY that arrives during the batch runs another.
            self._wake.clear()
            try:
                # While the broker is away claim nothing: the rows stay free and unattempted.
                await asyncio.wait_for(self._channel.ready(), timeout=1.0)
            except TimeoutError:
                continue
            try:
                result = await self._publisher.publish_batch()
            except Exception as exc:  # the database, most likely; keep going after a pause
                failures += 1
                logger.warning(
                    "outbox batch failed (%d in a row), retrying in %.1f s: %s",
                    failures,
                    BATCH_RETRY.delay(failures),
                    f"{type(exc).__name__}: {exc}",
                    exc_info=failures == 1,
                )
                await wait_event(stop, BATCH_RETRY.delay(failures))
                continue
            self.published += result.published
            if result.failed:
                failures += 1
                await wait_event(stop, BATCH_RETRY.delay(failures))
                continue
            if failures:
                logger.info("outbox publishing works again")
                failures = 0
            if result.claimed < self._publisher.batch_size:
                await wait_event(self._wake, self._settings.relay_poll_interval_seconds)

    async def _listen_forever(self, stop: asyncio.Event) -> None:
        dsn = asyncpg_dsn(self._settings.database_url.get_secret_value())
        while not stop.is_set():
            connection = await connect_with_retry(
                lambda: asyncpg.connect(dsn, timeout=10),
                what=f"PostgreSQL LISTEN {OUTBOX_CHANNEL} (polling meanwhile)",
                stop=stop,
            )
            if connection is None:
                return
            lost = asyncio.Event()

            def on_lost(_connection: object, lost: asyncio.Event = lost) -> None:
                lost.set()

            connection.add_termination_listener(on_lost)
            try:
                await connection.add_listener(OUTBOX_CHANNEL, self.wake)
                self.listening.set()
                self.wake()  # whatever committed while nobody was listening
                logger.info("listening on %s", OUTBOX_CHANNEL)
                await first_set(lost, stop)
            except Exception as exc:
                logger.warning("LISTEN failed: %s", f"{type(exc).__name__}: {exc}")
            finally:
                self.listening.clear()
                if not connection.is_closed():
                    await connection.close(timeout=5)
            if not stop.is_set():
                logger.warning("lost the LISTEN connection; polling until it is back")
                await wait_event(stop, BATCH_RETRY.base_delay)

    async def _measure_forever(self, stop: asyncio.Event) -> None:
        """Refresh the backlog gauges (every relay does; dashboards take the max)."""
        interval = min(BACKLOG_REFRESH_SECONDS, self._settings.relay_poll_interval_seconds)
        while not stop.is_set():
            try:
                await measure_backlog(self._session_factory)
            except Exception as exc:
                logger.warning("outbox backlog not measured: %s", f"{type(exc).__name__}: {exc}")
            await wait_event(stop, interval)

    async def _reannounce_forever(self, stop: asyncio.Event) -> None:
        """Orders still unprocessed long after their `new_order` was published are announced
        again (``service.reannounce``); the new events wake the publisher."""
        older_than = timedelta(seconds=self._settings.reannounce_after_seconds)
        while not stop.is_set():
            await wait_event(stop, self._settings.reannounce_interval_seconds)
            if stop.is_set():
                return
            try:
                with untraced():
                    count = await reannounce(
                        OrdersUnitOfWork(self._session_factory), older_than=older_than
                    )
            except Exception as exc:
                logger.warning("re-announcing failed: %s", f"{type(exc).__name__}: {exc}")
                continue
            if count:
                logger.warning(
                    "%d orders still unprocessed %.0f s after their new_order was published: "
                    "announced again",
                    count,
                    older_than.total_seconds(),
                )
                self._wake.set()

    async def _purge_forever(self, stop: asyncio.Event) -> None:
        retention = timedelta(hours=self._settings.outbox_retention_hours)
        while not stop.is_set():
            try:
                with untraced():
                    deleted = await purge_published(self._session_factory, retention)
                    await purge_expired_idempotency_keys(OrdersUnitOfWork(self._session_factory))
            except Exception as exc:
                logger.warning("outbox clean-up failed: %s", f"{type(exc).__name__}: {exc}")
            else:
                if deleted:
                    logger.info(
                        "deleted %d outbox events published over %s h ago",
                        deleted,
                        self._settings.outbox_retention_hours,
                    )
            await wait_event(stop, self._settings.outbox_cleanup_interval_seconds)


async def measure_backlog(session_factory: async_sessionmaker[AsyncSession]) -> None:
    """Set the backlog gauges from the outbox: unpublished events and the oldest one's age."""
    with untraced():
        async with OrdersUnitOfWork(session_factory) as uow:
            count, oldest = await uow.outbox.backlog()
    OUTBOX_BACKLOG.set(count)
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
    OUTBOX_OLDEST_AGE.set(max(0.0, age))
