"""Helpers shared by the test suites of the lib and the services (real RabbitMQ and Redis).

Plain functions and async context managers: no pytest here, so that importing this module costs
production code nothing. Each test directory keeps its own fixtures, built from these.
"""

from __future__ import annotations

import asyncio
import inspect
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


def run_id() -> str:
    """A short id unique to one test run, for the names of its exchange, queues and keys."""
    return uuid.uuid4().hex[:10]


def run_topology(run: str) -> Topology:
    """The exchange and queue names of the run ``run``: ``test-<run>.events``, ``test-<run>.*``."""
    return Topology(exchange=f"test-{run}.events", queue_prefix=f"test-{run}")


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


async def delete_redis_keys(url: str, prefix: str) -> None:
    """Delete every key of the Redis at ``url`` that starts with ``prefix``."""
    client = aioredis.Redis.from_url(url)
    async for key in client.scan_iter(match=f"{prefix}*"):
        await client.delete(key)
    await client.aclose()
