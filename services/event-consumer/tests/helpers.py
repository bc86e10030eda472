"""Helpers of the event-consumer tests (imported by path: the tests have no package)."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from event_consumer.settings import Settings
from order_common.events import Envelope, EventType, NewOrder, envelope
from order_common.orders import OrderItem, OrderStatus


def new_order_event() -> Envelope[Any]:
    return envelope(
        EventType.NEW_ORDER,
        NewOrder(
            order_id=uuid.uuid4(),
            user_id=1,
            items=[OrderItem(name="Laptop", quantity=1, price="400.00")],
            total_price="400.00",
            status=OrderStatus.PENDING,
            created_at=datetime.now(UTC),
        ),
    )


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def celery_tasks(settings: Settings) -> list[dict[str, Any]]:
    """The tasks waiting in the Celery queue (a Redis list under kombu's key prefix), as
    ``{"task": name, "kwargs": {...}}``."""
    client = aioredis.Redis.from_url(settings.celery_broker_url)
    try:
        raw = await client.lrange(f"{settings.celery_key_prefix}{settings.celery_queue}", 0, -1)
    finally:
        await client.aclose()
    tasks = []
    for item in raw:
        message = json.loads(item)
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        tasks.append({"task": message["headers"]["task"], "kwargs": kwargs})
    return tasks
