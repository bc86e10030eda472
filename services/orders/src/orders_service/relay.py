"""The outbox relay: publishes the outbox to RabbitMQ, a batch at a time with
``orders_service.outbox_publisher`` (claiming, confirms, attempts and dead letters). Its
process is ``orders_service.events``.

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
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
from aio_pika.abc import AbstractRobustChannel
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from order_common.aio import CONNECT_RETRY, connect_with_retry, first_set, wait_event
from order_common.db import asyncpg_dsn
from order_common.telemetry import untraced
from orders_service.metrics import OUTBOX_BACKLOG, OUTBOX_DEAD_LETTERS, OUTBOX_OLDEST_AGE
from orders_service.outbox_publisher import OutboxPublisher
from orders_service.repository import OUTBOX_CHANNEL
from orders_service.service import purge_expired_idempotency_keys, reannounce
from orders_service.settings import Settings
from orders_service.uow import OrdersUnitOfWork

logger = logging.getLogger(__name__)

# After a failed batch (the database or the broker), the same back-off as a first connection.
BATCH_RETRY = CONNECT_RETRY
_PURGE_BATCH = 1000
# How often the backlog gauges are refreshed (at most; the poll interval if shorter).
BACKLOG_REFRESH_SECONDS = 5.0


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
            if result.outage:
                # The broker (or one of its queues) is away or too slow: back off, so a queue
                # that nacks everything is not asked again in a tight loop.
                failures += 1
                await wait_event(stop, BATCH_RETRY.delay(failures))
                continue
            # Rows that failed on their own content are retried with the next batch (only they
            # are still unpublished) until dead-lettered, with no pause for the rest.
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
    """Set the backlog gauges from the outbox: unpublished events, the oldest one's age, and
    the dead letters."""
    with untraced():
        async with OrdersUnitOfWork(session_factory) as uow:
            count, oldest = await uow.outbox.backlog()
            dead_letters = await uow.outbox.count_dead_letters()
    OUTBOX_BACKLOG.set(count)
    OUTBOX_DEAD_LETTERS.set(dead_letters)
    age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
    OUTBOX_OLDEST_AGE.set(max(0.0, age))
