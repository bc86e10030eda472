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
from order_testing import TcpProxy, free_port

from order_common.events import parse_envelope
from order_common.tasks import (
    PROCESS_ORDER_TASK,
    PROCESS_ORDERS_TASK,
    BatchedOrder,
    ProcessOrder,
    ProcessOrders,
)
from order_worker.app import create_celery
from order_worker.settings import Settings

WORKER = str(Path(sys.executable).parent / "order-worker")


@dataclass
class WorkerProcess:
    process: asyncio.subprocess.Process
    messages: list[str] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)  # with their timestamps, for a failure
    reader: asyncio.Task[None] | None = None

    async def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(predicate(message) for message in self.messages):
            if self.process.returncode is not None or time.monotonic() > deadline:
                raise AssertionError("worker output so far:\n" + "\n".join(self.raw))
            await asyncio.sleep(0.05)


async def _read(worker: WorkerProcess) -> None:
    assert worker.process.stdout is not None
    async for raw in worker.process.stdout:
        line = raw.decode(errors="replace").strip()
        if line.startswith("{"):
            entry = json.loads(line)
            worker.raw.append(f"{entry['timestamp']} {entry['message']}")
            line = entry["message"]
        worker.messages.append(line)


@pytest.fixture
async def start_worker(
    settings: Settings,
) -> AsyncIterator[Callable[..., Awaitable[WorkerProcess]]]:
    values = {
        "AMQP_URL": settings.amqp_url.get_secret_value(),
        "BUS_EXCHANGE": settings.bus_exchange,
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "CELERY_KEY_PREFIX": settings.celery_key_prefix,
        # The visibility timeout is not set: it follows from these (10 + 2 + 15 = 27 s).
        "PROCESSING_DELAY_SECONDS": "3",
        "TASK_TIME_LIMIT_SECONDS": "10",
        "TASK_RETRY_BACKOFF_MAX_SECONDS": "2",
        "RESTORE_INTERVAL_SECONDS": "1",
        "CONCURRENCY": "1",
    }
    env = {**os.environ, **{f"WORKER_{name}": value for name, value in values.items()}}
    started: list[WorkerProcess] = []

    async def start(**overrides: str) -> WorkerProcess:
        """A worker; keyword arguments are settings (``amqp_url="..."``)."""
        # Each its own metrics port: a killed worker's may still be held while the next starts.
        extra = {"WORKER_METRICS_PORT": str(free_port())}
        extra |= {f"WORKER_{name.upper()}": value for name, value in overrides.items()}
        process = await asyncio.create_subprocess_exec(
            WORKER,
            env={**env, **extra},
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
    start_worker: Callable[..., Awaitable[WorkerProcess]],
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
    await first.wait_for(lambda m: m == f"processing order {order_id}", timeout=60)
    os.killpg(first.process.pid, signal.SIGKILL)  # the whole worker, mid-task
    await first.process.wait()
    assert f"Order {order_id} processed" not in first.messages

    killed_at = time.monotonic()

    second = await start_worker()
    # Back within the visibility timeout of the first delivery (plus a restore interval and
    # the processing), not Celery's default hour.
    await second.wait_for(lambda m: m == f"processing order {order_id}", timeout=40)
    assert time.monotonic() - killed_at <= 27 + 1 + 10
    await second.wait_for(lambda m: m == f"Order {order_id} processed", timeout=20)
    await asyncio.sleep(1.0)  # room for a second, wrong, publication to arrive

    message = await processed_queue.get(no_ack=True, timeout=5)
    assert parse_envelope(message.body).data.order_id == order_id
    assert await processed_queue.get(no_ack=True, fail=False) is None
    producer.close()


async def test_a_worker_killed_before_its_report_got_through_is_followed_by_the_report_only(
    settings: Settings,
    processed_queue: AbstractQueue,
    start_worker: Callable[..., Awaitable[WorkerProcess]],
) -> None:
    order_id = uuid.uuid4()
    producer = create_celery(settings)
    await asyncio.to_thread(
        producer.send_task,
        PROCESS_ORDER_TASK,
        kwargs=ProcessOrder(order_id=order_id, event_id=uuid.uuid4()).model_dump(mode="json"),
        queue=settings.celery_queue,
    )
    # The first worker reaches RabbitMQ through a proxy that drops every connection: it
    # processes the order, records the outcome, and cannot report it.
    proxy = await TcpProxy(5672).start(closed=True)
    await proxy.refuse()
    try:
        first = await start_worker(amqp_url=proxy.url("amqp://guest:guest@127.0.0.1:{port}/"))
        await first.wait_for(lambda m: "reporting it failed" in m, timeout=60)
        os.killpg(first.process.pid, signal.SIGKILL)
        await first.process.wait()
    finally:
        await proxy.close()
    assert f"Order {order_id} processed" in first.messages

    second = await start_worker()
    message = None
    deadline = time.monotonic() + 50  # the visibility timeout, a restore interval, a margin
    while message is None:
        message = await processed_queue.get(no_ack=True, fail=False)
        if message is None:
            assert time.monotonic() < deadline, "no report:\n" + "\n".join(second.messages)
            await asyncio.sleep(0.2)
    assert parse_envelope(message.body).data.order_id == order_id
    await asyncio.sleep(1.0)  # room for a second, wrong, publication to arrive
    assert await processed_queue.get(no_ack=True, fail=False) is None
    # The work ran once: the second worker only reported the recorded outcome.
    assert not any(m == f"processing order {order_id}" for m in second.messages)
    producer.close()


async def test_a_batch_whose_worker_was_killed_runs_again_and_reports_each_order_once(
    settings: Settings,
    processed_queue: AbstractQueue,
    start_worker: Callable[..., Awaitable[WorkerProcess]],
) -> None:
    orders = [BatchedOrder(order_id=uuid.uuid4(), event_id=uuid.uuid4()) for _ in range(4)]
    producer = create_celery(settings)
    await asyncio.to_thread(
        producer.send_task,
        PROCESS_ORDERS_TASK,
        kwargs=ProcessOrders(orders=orders).model_dump(mode="json"),
        queue=settings.celery_queue,
    )

    first = await start_worker()
    await first.wait_for(lambda m: m == f"processing order {orders[-1].order_id}", timeout=60)
    os.killpg(first.process.pid, signal.SIGKILL)  # the whole worker, mid-batch
    await first.process.wait()
    assert not any(m.startswith("Order ") for m in first.messages)
    killed_at = time.monotonic()

    second = await start_worker()
    for order in orders:
        await second.wait_for(lambda m, o=order: m == f"Order {o.order_id} processed", timeout=40)
    assert time.monotonic() - killed_at <= 27 + 1 + 10 + 3
    await asyncio.sleep(1.0)  # room for a second, wrong, publication to arrive

    reports = []
    while (message := await processed_queue.get(no_ack=True, fail=False)) is not None:
        reports.append(parse_envelope(message.body).data.order_id)
    assert sorted(reports) == sorted(order.order_id for order in orders)
    producer.close()
