"""The API's outbox notifier against the real PostgreSQL, through a TCP proxy that makes the
database slow or hung: every NOTIFY is bounded by the command timeout of the settings, and
closing the notifier while a NOTIFY is on its way still sends it and leaves no connection."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from order_testing import TcpProxy, eventually

from order_common.db import asyncpg_dsn
from orders_service.notifier import OutboxNotifier
from orders_service.repository import OUTBOX_CHANNEL


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    async with TcpProxy(5432) as running:
        yield running


def proxied_url(proxy: TcpProxy, database_url: str, application_name: str) -> str:
    """``database_url`` through ``proxy``, as the service's settings would spell it (with a
    SQLAlchemy-only option the DSN helper must drop)."""
    database = database_url.rsplit("/", 1)[1]
    return proxy.url(
        f"postgresql+asyncpg://postgres@127.0.0.1:{{port}}/{database}"
        f"?prepared_statement_cache_size=0&application_name={application_name}"
    )


def no_backend_named(database_url: str, application_name: str) -> Callable[[], Awaitable[bool]]:
    """A check (for ``eventually``) that no server process serves ``application_name``."""

    async def check() -> bool:
        connection = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            count = await connection.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                application_name,
            )
        finally:
            await connection.close()
        return bool(count == 0)

    return check


async def test_a_notify_to_a_hung_database_fails_within_the_command_timeout(
    proxy: TcpProxy, database_url: str
) -> None:
    name = f"notifier-{secrets.token_hex(4)}"
    notifier = OutboxNotifier(
        asyncpg_dsn(proxied_url(proxy, database_url, name)),
        connect_timeout=2.0,
        command_timeout=0.5,
    )
    notifier.start()
    try:
        notifier.notify()
        await eventually(lambda: notifier.sent == 1, timeout=5)

        proxy.delay = 60.0  # the database hangs: nothing comes back for a minute
        notifier.notify()
        # Bounded by the command timeout (twice: the connection is replaced once), not a
        # minute: the next NOTIFY is not held back behind a hung one.
        await eventually(lambda: notifier.failed == 1, timeout=5)

        proxy.delay = 0.0
        notifier.notify()
        await eventually(lambda: notifier.sent == 2, timeout=10)
    finally:
        proxy.delay = 0.0
        await notifier.aclose()


@pytest.mark.parametrize("asked_again", [False, True], ids=["in-flight", "asked-again"])
async def test_closing_while_a_notify_is_on_its_way_sends_it_and_leaves_no_connection(
    proxy: TcpProxy, database_url: str, asked_again: bool
) -> None:
    """``aclose`` while the notifier's task is still connecting for a NOTIFY (the database is
    slow): the NOTIFY owed is sent all the same, once, and the notifier's connection is gone.
    With ``asked_again`` a last commit asks once more during the connect, as at shutdown."""
    name = f"notifier-{secrets.token_hex(4)}"
    listener = await asyncpg.connect(asyncpg_dsn(database_url))
    heard: list[int] = []
    await listener.add_listener(OUTBOX_CHANNEL, lambda _c, pid, _ch, _p: heard.append(pid))
    proxy.delay = 0.1  # a connect takes several round trips: long enough to close during it
    notifier = OutboxNotifier(
        asyncpg_dsn(proxied_url(proxy, database_url, name)),
        connect_timeout=5.0,
        command_timeout=5.0,
    )
    notifier.start()
    try:
        notifier.notify()
        await asyncio.sleep(0.15)  # the task has cleared the flag and is connecting
        assert notifier.sent == 0
        if asked_again:
            notifier.notify()
        await notifier.aclose()
        assert notifier.sent == 1
        await eventually(lambda: len(heard) == 1, timeout=3)
        await asyncio.sleep(0.3)  # room for a second one to show up
        assert len(heard) == 1
    finally:
        await listener.close()
    await eventually(no_backend_named(database_url, name), timeout=5)
