"""Dead letters of the Celery tasks: a task that fails for good is parked with its reason,
never only logged, and can be re-driven -- the twin of the bus's dead-letter queues
(``order_common.dlq``) for the worker's own queue.

A Redis list in Celery's broker, ``{celery_key_prefix}{celery_queue}.dlq``, holds one JSON
entry per failed task: its name, id and arguments, the reason (``max-retries``: it kept failing
on transient errors; ``time-limit``: it ran past ``WORKER_TASK_TIME_LIMIT_SECONDS``;
``poison``: its arguments are not a valid ``ProcessOrder``; ``error``: any other exception),
the error, the retries it had, and when. A re-drive sends
each task again with its arguments and removes the entry only once the send succeeded, so a
crash repeats one rather than losing it (the task is idempotent).

Command line::

    order-worker dlq show    [--limit 10]
    order-worker dlq redrive [--limit N]

configured by the WORKER_* variables like the worker (``make dlq``, ``make dlq-redrive
QUEUE=tasks``). Output is JSON lines."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celery.exceptions import TimeLimitExceeded
from pydantic import ValidationError
from redis import Redis

from order_worker.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger(__name__)

_MAX_ERROR_LENGTH = 2000


def dead_letter_key(settings: Settings) -> str:
    return f"{settings.celery_key_prefix}{settings.celery_queue}.dlq"


def broker_redis(settings: Settings) -> Redis:
    return Redis.from_url(
        settings.celery_broker_url.get_secret_value(),
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )


def reason_of(exc: BaseException, transient: tuple[type[BaseException], ...]) -> str:
    if isinstance(exc, TimeLimitExceeded):
        return "time-limit"
    if isinstance(exc, ValidationError):
        return "poison"
    if isinstance(exc, transient):
        return "max-retries"
    return "error"


def park(
    redis: Redis,
    settings: Settings,
    *,
    task: str,
    task_id: str | None,
    kwargs: dict[str, Any],
    reason: str,
    error: str,
    retries: int | None,
) -> None:
    entry = {
        "task": task,
        "task_id": task_id,
        "kwargs": kwargs,
        "reason": reason,
        "error": error[:_MAX_ERROR_LENGTH],
        "retries": retries,
        "dead_lettered_at": datetime.now(UTC).isoformat(),
    }
    redis.rpush(dead_letter_key(settings), json.dumps(entry))
    logger.error(
        "task %s dead-lettered (%s): %s",
        task,
        reason,
        entry["error"],
        extra={"task_id": task_id, "reason": reason, "queue": dead_letter_key(settings)},
    )


def count(redis: Redis, settings: Settings) -> int:
    return int(redis.llen(dead_letter_key(settings)))


def peek(redis: Redis, settings: Settings, limit: int = 10) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in redis.lrange(dead_letter_key(settings), 0, limit - 1)]


def redrive(redis: Redis, settings: Settings, celery: Celery, limit: int | None = None) -> int:
    """Send the parked tasks again (at most the ones there at the start, and ``limit``);
    return how many. Each entry goes only after its task was sent."""
    key = dead_letter_key(settings)
    budget = count(redis, settings)
    if limit is not None:
        budget = min(budget, limit)
    moved = 0
    while moved < budget:
        found = redis.lindex(key, 0)
        if found is None:
            break
        raw = found.decode() if isinstance(found, bytes) else str(found)
        entry = json.loads(raw)
        celery.send_task(entry["task"], kwargs=entry["kwargs"], queue=settings.celery_queue)
        redis.lrem(key, 1, raw)
        moved += 1
    return moved


def main(action: str, limit: int | None) -> None:
    """``order-worker dlq show|redrive``."""
    from order_worker.app import create_celery

    settings = Settings()
    redis = broker_redis(settings)
    try:
        if action == "show":
            print(json.dumps({"queue": dead_letter_key(settings), "tasks": count(redis, settings)}))
            for entry in peek(redis, settings, limit or 10):
                print(json.dumps(entry))
        else:
            celery = create_celery(settings)
            try:
                moved = redrive(redis, settings, celery, limit)
            finally:
                celery.close()
            print(json.dumps({"queue": dead_letter_key(settings), "redriven": moved}))
    finally:
        redis.close()
