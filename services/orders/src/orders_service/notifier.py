"""Waking the relays after an outbox row committed: NOTIFY outside the order's transaction,
coalesced.

A NOTIFY sent inside a transaction takes a database-wide lock at commit and holds it until the
commit is done, so every committing order would queue behind every other one. Instead the
orders' unit of work commits first and then calls ``OutboxNotifier.notify``, which only sets a
flag; one task per process sends ``pg_notify`` on a connection of its own (outside the request
pool, so a busy pool never holds a NOTIFY back), one at a time. Every commit that asks while a
NOTIFY is on its way is covered by the next one, so under load a process sends one NOTIFY per
round trip, not one per order.

The relay still polls (``relay_poll_interval_seconds``): a NOTIFY that is lost -- the process
dies between the commit and it, or the database is unreachable for it -- delays the event by
one poll at most, never loses it (the row is committed)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from orders_service.repository import OUTBOX_CHANNEL

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT_SECONDS = 5.0


class OutboxNotifier:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn  # a plain asyncpg DSN (order_common.db.asyncpg_dsn)
        self._connection: asyncpg.Connection | None = None
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # NOTIFYs sent (fewer than the commits that asked, under load)

    def notify(self) -> None:
        """Ask for a NOTIFY (after a commit that wrote outbox rows). Never blocks or fails."""
        self._pending.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox notifier")

    async def aclose(self) -> None:
        if self._task is not None:
            if self._pending.is_set():  # a last commit asked: wake the relays before leaving
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._send(), timeout=2)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await connection.close(timeout=2)

    async def _send(self) -> None:
        self._pending.clear()
        for attempt in (1, 2):  # a connection the server dropped is replaced once at once
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(
                    self._dsn, timeout=_CONNECT_TIMEOUT_SECONDS
                )
            try:
                await self._connection.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
            except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
                await self._disconnect()
                if attempt == 2:
                    raise
            else:
                break
        self.sent += 1

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            try:
                await self._send()
            except Exception as exc:  # the relay's poll covers it
                logger.warning(
                    "NOTIFY %s failed; the relays find the events at their next poll: %s",
                    OUTBOX_CHANNEL,
                    f"{type(exc).__name__}: {exc}",
                )
                await asyncio.sleep(1.0)  # not a busy loop while the database is away
