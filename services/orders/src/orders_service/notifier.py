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

# While the database is unreachable, one attempt a second at most (the relays poll meanwhile).
_RETRY_PAUSE_SECONDS = 1.0
# What the last NOTIFY may take when the process stops, connecting included.
_LAST_NOTIFY_SECONDS = 2.0


class OutboxNotifier:
    """``dsn`` is a plain asyncpg DSN (``order_common.db.asyncpg_dsn``); each connect and each
    NOTIFY is bounded by the service's ``*_DB_CONNECT_TIMEOUT_SECONDS`` and
    ``*_DB_COMMAND_TIMEOUT_SECONDS``, so a database that hangs holds back no NOTIFY after it
    for longer than that (and never a request: ``notify`` only sets a flag)."""

    def __init__(self, dsn: str, *, connect_timeout: float, command_timeout: float) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._connection: asyncpg.Connection | None = None
        self._pending = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # NOTIFYs sent (fewer than the commits that asked, under load)
        self.failed = 0  # NOTIFYs that could not be sent (the relays' poll covered them)

    def notify(self) -> None:
        """Ask for a NOTIFY (after a commit that wrote outbox rows). Never blocks or fails."""
        self._pending.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox notifier")

    @property
    def backend_pid(self) -> int | None:
        """The server process of the notifier's own connection, while it has one."""
        connection = self._connection
        if connection is None or connection.is_closed():
            return None
        return int(connection.get_server_pid())

    async def aclose(self) -> None:
        """Stop the task first -- whatever it was doing: waiting, connecting, sending -- and
        only then send the NOTIFY a last commit may still be owed, on a connection nobody
        else uses any more, and close it. (Sending beside a task still in flight raced it for
        one connection, or opened a second one that nothing closed.)"""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self._pending.is_set():  # a last commit asked: wake the relays before leaving
                try:
                    await asyncio.wait_for(self._send(), timeout=_LAST_NOTIFY_SECONDS)
                except Exception as exc:
                    self.failed += 1
                    logger.warning("last NOTIFY %s failed: %s", OUTBOX_CHANNEL, _describe(exc))
        await self._disconnect()

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await connection.close(timeout=_LAST_NOTIFY_SECONDS)
            except Exception:
                connection.terminate()  # never left open, whatever the close met
            except asyncio.CancelledError:
                connection.terminate()
                raise

    async def _connect(self) -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout, command_timeout=self._command_timeout
        )
        return connection

    async def _send(self) -> None:
        # Cleared before sending: a commit that asks meanwhile gets a NOTIFY of its own.
        self._pending.clear()
        try:
            for attempt in (1, 2):  # a connection the server dropped is replaced once at once
                if self._connection is None or self._connection.is_closed():
                    self._connection = await self._connect()
                try:
                    await self._connection.execute("SELECT pg_notify($1, '')", OUTBOX_CHANNEL)
                except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError):
                    await self._disconnect()
                    if attempt == 2:
                        raise
                except BaseException:
                    # Timed out or cancelled mid-statement: the connection's state is unknown.
                    await self._disconnect()
                    raise
                else:
                    break
        except asyncio.CancelledError:
            self._pending.set()  # not sent: still owed (aclose sends it)
            raise
        self.sent += 1

    async def _run(self) -> None:
        while True:
            await self._pending.wait()
            try:
                await self._send()
            except Exception as exc:  # the relay's poll covers it
                self.failed += 1
                logger.warning(
                    "NOTIFY %s failed; the relays find the events at their next poll: %s",
                    OUTBOX_CHANNEL,
                    _describe(exc),
                )
                await asyncio.sleep(_RETRY_PAUSE_SECONDS)  # not a busy loop meanwhile


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
