"""Helpers of the event-consumer tests (imported by path: the tests have no package)."""

from __future__ import annotations

import base64
import json
from typing import Any

import aio_pika
import order_testing as testing
import redis.asyncio as aioredis
from aio_pika.abc import AbstractRobustConnection
from order_testing import Check, new_order_event
from prometheus_client import REGISTRY

from event_consumer.consumer import SUBSCRIBER
from event_consumer.settings import Settings
from order_common.tasks import PROCESS_ORDER_TASK, PROCESS_ORDERS_TASK

__all__ = [
    "celery_tasks",
    "consumers",
    "eventually",
    "handled",
    "new_order_event",
    "paused",
    "sent_orders",
]


async def eventually(check: Check, timeout: float = 15.0) -> None:
    """`order_testing.eventually`, with this suite's longer default timeout."""
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


async def sent_orders(settings: Settings) -> list[dict[str, str]]:
    """The orders of the tasks waiting in the Celery queue, one entry per order whether it was
    sent alone (``process_order``) or in a batch (``process_orders``): ``{"order_id": ...,
    "event_id": ...}``."""
    orders = []
    for task in await celery_tasks(settings):
        if task["task"] == PROCESS_ORDERS_TASK:
            entries = task["kwargs"]["orders"]
        else:
            assert task["task"] == PROCESS_ORDER_TASK, task
            entries = [task["kwargs"]]
        orders += [{"order_id": e["order_id"], "event_id": e["event_id"]} for e in entries]
    return orders


async def consumers(amqp: AbstractRobustConnection, queue: str) -> int:
    channel = await amqp.channel()
    try:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.consumer_count or 0)
    except aio_pika.exceptions.ChannelClosed:  # not declared yet
        return 0
    finally:
        if not channel.is_closed:
            await channel.close()


def handled(result: str) -> float:
    """``bus_events_consumed_total`` of this consumer's ``new_order`` with ``result``."""
    labels = {"subscriber": SUBSCRIBER, "event_type": "new_order", "result": result}
    return REGISTRY.get_sample_value("bus_events_consumed_total", labels) or 0.0


def paused() -> bool:
    """Whether this consumer's ``new_order`` subscriber waits out an unreachable dependency."""
    labels = {"subscriber": SUBSCRIBER, "event_type": "new_order"}
    return (REGISTRY.get_sample_value("bus_consumer_paused", labels) or 0.0) == 1.0
