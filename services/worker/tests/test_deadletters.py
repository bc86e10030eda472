"""A task that fails for good is parked with its reason in the worker's dead-letter list,
`order-worker dlq show` lists it and `order-worker dlq redrive` sends it again."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

from aio_pika.abc import AbstractQueue
from order_testing import TcpProxy
from pydantic import SecretStr

from order_common.events import parse_envelope
from order_common.tasks import PROCESS_ORDER_TASK, ProcessOrder
from order_worker import deadletters
from order_worker.app import create_celery
from order_worker.settings import Settings

WORKER = str(Path(sys.executable).parent / "order-worker")


async def order_worker(settings: Settings, *args: str) -> list[dict[str, object]]:
    values = settings.model_dump(
        include={"celery_broker_url", "celery_key_prefix", "celery_queue", "amqp_url"}
    )
    values = {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in values.items()}
    env = {**os.environ, **{f"WORKER_{k.upper()}": str(v) for k, v in values.items()}}
    process = await asyncio.create_subprocess_exec(
        WORKER, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return [json.loads(line) for line in out.decode().splitlines()]


def run_task(settings: Settings, kwargs: dict[str, str]) -> str:
    app = create_celery(settings)
    try:
        result = app.tasks[PROCESS_ORDER_TASK].apply(kwargs=kwargs)
        return str(result.state)
    finally:
        app.resources().close()


async def test_a_task_out_of_retries_is_dead_lettered_shown_and_redriven(
    settings: Settings, processed_queue: AbstractQueue
) -> None:
    request = ProcessOrder(order_id=uuid.uuid4(), event_id=uuid.uuid4())
    kwargs = request.model_dump(mode="json")
    # RabbitMQ unreachable for the whole life of the task: two retries, then it gives up.
    proxy = await TcpProxy(5672).start(closed=True)
    failing = settings.model_copy(
        update={
            "amqp_url": SecretStr(proxy.url("amqp://guest:guest@127.0.0.1:{port}/")),
            "task_max_retries": 2,
        }
    )
    try:
        assert await asyncio.to_thread(run_task, failing, kwargs) == "FAILURE"
    finally:
        await proxy.close()

    shown = await order_worker(settings, "dlq", "show")
    assert shown[0] == {"queue": deadletters.dead_letter_key(settings), "tasks": 1}
    [entry] = shown[1:]
    assert entry["task"] == PROCESS_ORDER_TASK
    assert entry["kwargs"] == kwargs
    assert entry["reason"] == "max-retries"
    assert entry["retries"] == 2
    assert "Connection refused" in str(entry["error"]) or "111" in str(entry["error"])
    assert (await order_worker(settings, "dlq", "show"))[0]["tasks"] == 1  # still there

    assert await order_worker(settings, "dlq", "redrive") == [
        {"queue": deadletters.dead_letter_key(settings), "redriven": 1}
    ]
    assert (await order_worker(settings, "dlq", "show"))[0]["tasks"] == 0
    # Back in the Celery queue with its arguments; run now, it only reports (the order was
    # processed before the report failed).
    producer = create_celery(settings)
    redis = deadletters.broker_redis(settings)
    try:
        [raw] = redis.lrange(f"{settings.celery_key_prefix}{settings.celery_queue}", 0, -1)
        message = json.loads(raw)
        assert message["headers"]["task"] == PROCESS_ORDER_TASK
    finally:
        redis.close()
        producer.close()
    assert await asyncio.to_thread(run_task, settings, kwargs) == "SUCCESS"
    report = await processed_queue.get(no_ack=True, timeout=5)
    assert parse_envelope(report.body).data.order_id == request.order_id


async def test_a_task_with_bad_arguments_is_dead_lettered_at_once_as_poison(
    settings: Settings,
) -> None:
    bad = {"order_id": "not-a-uuid", "event_id": str(uuid.uuid4())}
    assert await asyncio.to_thread(run_task, settings, bad) == "FAILURE"
    redis = deadletters.broker_redis(settings)
    try:
        [entry] = deadletters.peek(redis, settings)
    finally:
        redis.close()
    assert entry["reason"] == "poison"
    assert entry["retries"] == 0
    assert entry["kwargs"] == bad
