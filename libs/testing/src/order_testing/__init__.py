"""Helpers shared by the test suites of the lib and the services (real RabbitMQ and Redis).

Plain functions and async context managers: no pytest here, so that importing this module costs
production code nothing. Each test directory keeps its own fixtures, built from these.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal

import redis.asyncio as aioredis
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from order_common.bus import Topology, connect, delete_exchanges, delete_subscription
from order_common.dlq import count_messages
from order_common.events import Envelope, EventType, NewOrder, envelope
from order_common.orders import OrderItem, OrderStatus

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"

Check = Callable[[], Awaitable[bool] | bool]


async def eventually(check: Check, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait until ``check()`` (plain or awaitable) is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_id() -> str:
    """A short id unique to one test run, for the names of its exchange, queues and keys."""
    return uuid.uuid4().hex[:10]


def run_topology(run: str) -> Topology:
    """The exchange and queue names of the run ``run``: ``test-<run>.events``, ``test-<run>.*``."""
    return Topology(exchange=f"test-{run}.events", queue_prefix=f"test-{run}")


def run_bus_settings(run: str) -> dict[str, str]:
    """``run_topology(run)`` as the fields of a service's ``BusSettings``."""
    topology = run_topology(run)
    return {"bus_exchange": topology.exchange, "bus_queue_prefix": topology.queue_prefix}


def new_order(*, user_id: int = 1, name: str = "Laptop", price: str = "400.00") -> NewOrder:
    """A pending order of one item."""
    return NewOrder(
        order_id=uuid.uuid4(),
        user_id=user_id,
        items=[OrderItem(name=name, quantity=1, price=Decimal(price))],
        total_price=Decimal(price),
        status=OrderStatus.PENDING,
        created_at=datetime.now(UTC),
    )


def new_order_event(
    *, user_id: int = 1, name: str = "Laptop", price: str = "400.00"
) -> Envelope[NewOrder]:
    """A `new_order` event of a pending order of one item."""
    return envelope(EventType.NEW_ORDER, new_order(user_id=user_id, name=name, price=price))


def queue_count(
    channel: AbstractChannel, queue: str, expected: int
) -> Callable[[], Awaitable[bool]]:
    """A check (for `eventually`) that ``queue`` holds exactly ``expected`` messages."""

    async def check() -> bool:
        return await count_messages(channel, queue) == expected

    return check


@asynccontextmanager
async def amqp_connection(
    url: str = AMQP_URL, *, name: str | None = None
) -> AsyncIterator[AbstractRobustConnection]:
    """A robust connection, closed on exit."""
    connection = await connect(url, name=name)
    try:
        yield connection
    finally:
        await connection.close()


async def delete_topology(
    connection: AbstractRobustConnection,
    topology: Topology,
    subscriptions: Iterable[tuple[str, EventType]] = (),
) -> None:
    """Delete the given subscriptions' queues (messages included), then the exchanges."""
    channel = await connection.channel()
    for subscriber, event_type in subscriptions:
        await delete_subscription(channel, topology, subscriber, event_type)
    await delete_exchanges(channel, topology)
    await channel.close()


class TcpProxy:
    """A TCP proxy in front of a real service (Redis, PostgreSQL, RabbitMQ) that a test closes
    and opens: closed, its port refuses connections and the ones open are cut, as when the
    service is down; opened, it forwards again on the same port. The shared services are never
    stopped. ``async with TcpProxy(port) as proxy:`` starts it open; ``start(closed=True)``
    closed. ``refuse()`` keeps the port open but drops each connection at once, counting them
    in ``refused``: a service that accepts and fails, and a count of the client's attempts.
    ``delay`` (seconds, settable at any time) holds every chunk that long before passing it on:
    a slow or hung service."""

    delay = 0.0

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.connections = 0  # forwarded so far
        self.refused = 0  # dropped while refusing
        self._refusing = False

    async def start(self, *, closed: bool = False) -> TcpProxy:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        if not closed:
            await self.open()
        return self

    def url(self, scheme_and_rest: str) -> str:
        """``scheme_and_rest`` with ``{port}`` replaced, e.g. ``"redis://127.0.0.1:{port}/1"``."""
        return scheme_and_rest.format(port=self.port)

    @property
    def is_open(self) -> bool:
        return self._server is not None

    async def refuse(self) -> None:
        """Accept connections and drop them at once."""
        await self.open()
        self._refusing = True

    async def open(self) -> None:
        self._refusing = False
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def close(self) -> None:
        """Refuse new connections and cut the open ones."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            writer.transport.abort()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            self._tasks.difference_update(pumps)
            for side in (writer, up_writer):
                side.transport.abort()
                self._writers.discard(side)

    async def _pump(self, source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await source.read(65536):
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                target.write(data)
                await target.drain()


async def delete_redis_keys(url: str, prefix: str) -> None:
    """Delete every key of the Redis at ``url`` that starts with ``prefix``."""
    client = aioredis.Redis.from_url(url)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()
