"""The `order-worker` process killed with SIGKILL in the middle of a task."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aio_pika.abc import AbstractQueue

from order_common.events import parse_envelope
from order_common.tasks import PROCESS_ORDER_TASK, ProcessOrder
from order_worker.app import create_celery
from order_worker.settings import Settings

WORKER = str(Path(sys.executable).parent / "order-worker")


@dataclass
class WorkerProcess:
    process: asyncio.subprocess.Process
    messages: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(predicate(message) for message in self.messages):
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError("worker output so far:\n" + "\n".join(self.messages))
            await asyncio.sleep(0.05)


async def _read(worker: WorkerProcess) -> None:
    assert worker.process.stdout is not None
    async for raw in worker.process.stdout:
        line = raw.decode(errors="replace").strip()
        if line.startswith("{"):
            line = json.loads(line)["message"]
        worker.messages.append(line)


@pytest.fixture
async def start_worker(
    settings: Settings,
) -> AsyncIterator[Callable[[], Awaitable[WorkerProcess]]]:
    values = {
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "BUS_EXCHANGE": settings.bus_exchange,
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "CELERY_KEY_PREFIX": settings.celery_key_prefix,
        "PROCESSING_DELAY_SECONDS": "4",
        "VISIBILITY_TIMEOUT_SECONDS": "6",
        "RESTORE_INTERVAL_SECONDS": "1",
        "CONCURRENCY": "1",
    }
    env = {**os.environ, **{f"WORKER_{name}": value for name, value in values.items()}}
    started: list[WorkerProcess] = []

    async def start() -> WorkerProcess:
        process = await asyncio.create_subprocess_exec(
            WORKER,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill the pool children too
        )
        worker = WorkerProcess(process)
        worker.reader = asyncio.create_task(_read(worker))
        started.append(worker)
        return worker

    yield start
    for worker in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.process.pid, signal.SIGKILL)
        await worker.process.wait()
        if worker.reader is not None:
            await worker.reader


async def test_a_task_whose_worker_was_killed_runs_again_and_reports_once(
    settings: Settings,
    processed_queue: AbstractQueue,
    start_worker: Callable[[], Awaitable[WorkerProcess]],
) -> None:
    order_id = uuid.uuid4()
    producer = create_celery(settings)
    await asyncio.to_thread(
        producer.send_task,
        PROCESS_ORDER_TASK,
        kwargs=ProcessOrder(order_id=order_id, event_id=uuid.uuid4()).model_dump(mode="json"),
        queue=settings.celery_queue,
    )

    first = await start_worker()
    await first.wait_for(lambda m: m == f"processing order {order_id}", timeout=20)
    os.killpg(first.process.pid, signal.SIGKILL)  # the whole worker, mid-task
    await first.process.wait()
    assert f"Order {order_id} processed" not in first.messages

    second = await start_worker()
    await second.wait_for(lambda m: m == f"Order {order_id} processed", timeout=30)
    await asyncio.sleep(1.0)  # room for a second, wrong, publication to arrive

    message = await processed_queue.get(no_ack=True, timeout=5)
    assert parse_envelope(message.body).data.order_id == order_id
    assert await processed_queue.get(no_ack=True, fail=False) is None
    producer.close()
