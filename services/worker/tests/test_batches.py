"""``process_orders``: a batch of orders in one task, against real Redis and RabbitMQ. Each
order is processed once in effect and reported once, whatever the batch holds and however
its reports fail."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from aio_pika.abc import AbstractQueue
from opentelemetry.trace import Span
from order_testing import TcpProxy
from pydantic import SecretStr
from redis import Redis

from order_common.events import Envelope, parse_envelope
from order_common.tasks import PROCESS_ORDERS_TASK, BatchedOrder, ProcessOrders
from order_worker.app import create_celery
from order_worker.batches import process_orders
from order_worker.processing import Outcome, marker_key
from order_worker.publisher import BusPublisher
from order_worker.settings import Settings


@pytest.fixture
def redis(settings: Settings) -> Iterator[Redis]:
    client = Redis.from_url(settings.redis_url.get_secret_value())
    yield client
    client.close()


@pytest.fixture
def publisher(settings: Settings) -> Iterator[BusPublisher]:
    publisher = BusPublisher(settings.amqp_url.get_secret_value(), settings.bus_topology())
    yield publisher
    publisher.close()


def _orders(count: int) -> list[BatchedOrder]:
    return [BatchedOrder(order_id=uuid.uuid4(), event_id=uuid.uuid4()) for _ in range(count)]


async def _reports(queue: AbstractQueue) -> list[Envelope[Any]]:
    """Every `order_processed` waiting in ``queue`` (taken)."""
    found = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        found.append(parse_envelope(message.body))
    return found


def _run(
    settings: Settings,
    redis: Redis,
    publish_many: Any,
    orders: Sequence[BatchedOrder],
) -> dict[str, int]:
    return process_orders(
        ProcessOrders(orders=list(orders)),
        redis=redis,
        publish_many=publish_many,
        key_prefix=settings.redis_key_prefix,
        delay_seconds=0,
        marker_ttl_seconds=60,
    )


async def test_a_batch_processes_and_reports_each_order_once_even_when_sent_twice(
    settings: Settings, redis: Redis, publisher: BusPublisher, processed_queue: AbstractQueue
) -> None:
    orders = _orders(20)
    # One order twice in the batch (a redelivered event sent again in the same batch).
    batch = [*orders, orders[3]]
    first = await asyncio.to_thread(_run, settings, redis, publisher.publish_many, batch)
    assert first == {"processed": 20, "reported": 0, "skipped": 0}
    # The whole batch again (a redelivered task, or one handed to another worker).
    again = await asyncio.to_thread(_run, settings, redis, publisher.publish_many, batch)
    assert again == {"processed": 0, "reported": 0, "skipped": 20}

    reports = await _reports(processed_queue)
    assert sorted(r.data.order_id for r in reports) == sorted(o.order_id for o in orders)
    for report in reports:
        recorded = Outcome.load(
            redis.get(marker_key(settings.redis_key_prefix, report.data.order_id))
        )
        assert recorded is not None
        assert recorded.reported
        assert report.event_id == recorded.report_id
        assert report.data.processed_at == recorded.processed_at


async def test_a_report_failing_mid_batch_is_retried_alone_and_nothing_is_processed_twice(
    settings: Settings,
    redis: Redis,
    publisher: BusPublisher,
    processed_queue: AbstractQueue,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="order_worker")
    orders = _orders(6)
    failing = {orders[2].order_id, orders[4].order_id}

    def flaky(reports: Sequence[tuple[Envelope[Any], Span | None]]) -> list[BaseException | None]:
        """The real publisher, except that the reports of ``failing`` do not get through."""
        through = [r for r in reports if r[0].data.order_id not in failing]
        outcomes = iter(publisher.publish_many(through))
        return [
            ConnectionError("the broker dropped it")
            if report.data.order_id in failing
            else next(outcomes)
            for report, _ in reports
        ]

    with pytest.raises(ConnectionError):
        await asyncio.to_thread(_run, settings, redis, flaky, orders)
    # Every order was processed and recorded; the two failed reports are not flagged.
    for order in orders:
        recorded = Outcome.load(redis.get(marker_key(settings.redis_key_prefix, order.order_id)))
        assert recorded is not None
        assert recorded.reported == (order.order_id not in failing)

    retried = await asyncio.to_thread(_run, settings, redis, publisher.publish_many, orders)
    assert retried == {"processed": 0, "reported": 2, "skipped": 4}

    reports = await _reports(processed_queue)
    assert sorted(r.data.order_id for r in reports) == sorted(o.order_id for o in orders)
    for order in orders:
        text = f"processing order {order.order_id}"
        assert sum(record.getMessage() == text for record in caplog.records) == 1


async def test_the_batch_task_retries_its_reports_through_a_broker_outage(
    settings: Settings, processed_queue: AbstractQueue
) -> None:
    # RabbitMQ behind a proxy that drops every connection at first: the batch is processed
    # and recorded, its reports fail, and the task retries them once the broker is back.
    proxy = await TcpProxy(5672).start(closed=True)
    await proxy.refuse()
    app = create_celery(
        settings.model_copy(
            update={"amqp_url": SecretStr(proxy.url("amqp://guest:guest@127.0.0.1:{port}/"))}
        )
    )
    orders = _orders(5)
    kwargs = ProcessOrders(orders=orders).model_dump(mode="json")
    task = app.tasks[PROCESS_ORDERS_TASK]
    try:
        running = asyncio.create_task(asyncio.to_thread(lambda: task.apply(kwargs=kwargs).get()))
        await asyncio.sleep(2.0)  # a few failed rounds
        assert not running.done()
        await proxy.open()
        result = await asyncio.wait_for(running, 30)
    finally:
        await proxy.close()
        app.resources().close()

    assert result == {"processed": 0, "reported": 5, "skipped": 0}  # the last run only reported
    reports = await _reports(processed_queue)
    assert sorted(r.data.order_id for r in reports) == sorted(o.order_id for o in orders)


_TRACED_BATCH = """
import json, sys
from redis import Redis
from order_common.logging import configure_logging
from order_common.tasks import ProcessOrders
from order_common.telemetry import setup_telemetry
from order_worker.batches import process_orders
from order_worker.publisher import BusPublisher
from order_worker.settings import Settings

settings = Settings()
configure_logging("worker", "INFO")
setup_telemetry("worker")  # no exporter: spans are not recorded, yet keep their trace's ids
redis = Redis.from_url(settings.redis_url.get_secret_value())
publisher = BusPublisher(settings.amqp_url.get_secret_value(), settings.bus_topology())
batch = ProcessOrders.model_validate_json(sys.stdin.read())
print(json.dumps(process_orders(batch, redis=redis, publish_many=publisher.publish_many,
      key_prefix=settings.redis_key_prefix, delay_seconds=0, marker_ttl_seconds=60)))
publisher.close()
"""


async def test_each_order_of_a_batch_is_logged_and_reported_in_its_own_trace(
    settings: Settings, processed_queue: AbstractQueue
) -> None:
    traces = {uuid.uuid4(): secrets.token_hex(16) for _ in range(3)}
    batch = ProcessOrders(
        orders=[
            BatchedOrder(
                order_id=order_id,
                event_id=uuid.uuid4(),
                trace={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            )
            for order_id, trace_id in traces.items()
        ]
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "WORKER_AMQP_URL": settings.amqp_url.get_secret_value(),
        "WORKER_BUS_EXCHANGE": settings.bus_exchange,
        "WORKER_REDIS_KEY_PREFIX": settings.redis_key_prefix,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _TRACED_BATCH,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(batch.model_dump_json().encode()), 60)
    lines = output.decode().splitlines()
    assert process.returncode == 0, "\n".join(lines)
    assert json.loads(lines[-1]) == {"processed": 3, "reported": 0, "skipped": 0}

    logged = [json.loads(line) for line in lines if line.startswith('{"timestamp"')]
    for order_id, trace_id in traces.items():
        mine = [entry for entry in logged if entry.get("order_id") == str(order_id)]
        assert {entry["message"] for entry in mine} == {
            f"processing order {order_id}",
            f"Order {order_id} processed",
        }
        assert {entry.get("trace_id") for entry in mine} == {trace_id}, mine

    reported = {}
    while (message := await processed_queue.get(no_ack=True, fail=False)) is not None:
        traceparent = str((message.headers or {}).get("traceparent", ""))
        reported[parse_envelope(message.body).data.order_id] = traceparent.split("-")[1]
    assert reported == traces
