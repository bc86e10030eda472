"""Helpers of the event-consumer tests (imported by path: the tests have no package)."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis.asyncio as aioredis

from event_consumer.settings import Settings
from order_common import testing
from order_common.testing import Check, new_order_event

__all__ = ["celery_tasks", "eventually", "new_order_event"]


async def eventually(check: Check, timeout: float = 15.0) -> None:
    """`order_common.testing.eventually`, with this suite's longer default timeout."""
    await testing.eventually(check, timeout)


async def celery_tasks(settings: Settings) -> list[dict[str, Any]]:
    """The tasks waiting in the Celery queue (a Redis list under kombu's key prefix), as
    ``{"task": name, "kwargs": {...}}``."""
    client = aioredis.Redis.from_url(settings.celery_broker_url.get_secret_value())
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
