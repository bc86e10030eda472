"""`process_order` run in this process against real Redis and RabbitMQ."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from aio_pika.abc import AbstractQueue, AbstractRobustConnection
from order_testing import TcpProxy, eventually
from pydantic import SecretStr

from order_common.bus import declare_exchange, delete_exchanges
from order_common.dlq import count_messages
from order_common.events import EventType, OrderProcessed, envelope, parse_envelope
from order_common.tasks import PROCESS_ORDER_TASK, ProcessOrder
from order_worker.app import OrderWorkerApp, create_celery
from order_worker.publisher import BusPublisher
from order_worker.settings import Settings


@pytest.fixture
def app(settings: Settings) -> Iterator[OrderWorkerApp]:
    app = create_celery(settings)
    yield app
    app.resources().close()


def test_the_app_acks_late_and_takes_one_task_at_a_time(app: OrderWorkerApp) -> None:
    conf = app.conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert conf.worker_prefetch_multiplier == 1
    # A dead worker's tasks come back within a minute: the time limit bounds every run.
    assert conf.task_time_limit == 30
    assert conf.broker_transport_options["visibility_timeout"] == 30 + 15 + 15
    assert conf.broker_transport_options["global_keyprefix"] == app.settings.celery_key_prefix
    assert conf.task_default_queue == "orders"
    assert PROCESS_ORDER_TASK in app.tasks


def test_a_visibility_timeout_shorter_than_a_run_and_its_retry_wait_is_refused() -> None:
    with pytest.raises(ValueError, match="visibility_timeout_seconds"):
        Settings(task_time_limit_seconds=20, visibility_timeout_seconds=25)
    with pytest.raises(ValueError, match="task_time_limit_seconds"):
        Settings(processing_delay_seconds=10, task_time_limit_seconds=5)


def test_the_visibility_timeout_follows_the_time_limit() -> None:
    settings = Settings(processing_delay_seconds=50, task_time_limit_seconds=60)
    assert settings.effective_visibility_timeout == 60 + 15 + 15


async def test_processing_an_order_twice_publishes_one_order_processed(
    app: OrderWorkerApp, processed_queue: AbstractQueue
) -> None:
    request = ProcessOrder(order_id=uuid.uuid4(), event_id=uuid.uuid4())
    task = app.tasks[PROCESS_ORDER_TASK]

    def run() -> str:
        return str(task.apply(kwargs=request.model_dump(mode="json")).get())

    assert await asyncio.to_thread(run) == "processed"
    assert await asyncio.to_thread(run) == "skipped"

    message = await processed_queue.get(no_ack=True, timeout=5)
    event = parse_envelope(message.body)
    assert event.event_type is EventType.ORDER_PROCESSED
    assert isinstance(event.data, OrderProcessed)
    assert event.data.order_id == request.order_id
    assert message.message_id == str(event.event_id)
    assert await processed_queue.get(no_ack=True, fail=False) is None


async def test_the_kombu_publisher_declares_the_exchange_exactly_as_the_bus_does(
    settings: Settings, amqp: AbstractRobustConnection
) -> None:
    topology = settings.bus_topology()
    publisher = BusPublisher(settings.amqp_url.get_secret_value(), topology)
    event = envelope(
        EventType.ORDER_PROCESSED,
        OrderProcessed(order_id=uuid.uuid4(), processed_at=datetime.now(UTC)),
    )
    await asyncio.to_thread(publisher.publish, event)  # first to declare: kombu
    await asyncio.to_thread(publisher.close)

    channel = await amqp.channel()
    try:
        await declare_exchange(channel, topology)  # same arguments, or PRECONDITION_FAILED
        # Nobody subscribes yet: the event waits in the unrouted queue.
        assert await count_messages(channel, topology.unrouted_queue) == 1
    finally:
        await delete_exchanges(channel, topology)
        await channel.close()


async def test_a_report_that_fails_is_retried_without_processing_the_order_again(
    settings: Settings, processed_queue: AbstractQueue, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="order_worker")
    # RabbitMQ behind a proxy that drops every connection at first: each publish fails.
    proxy = await TcpProxy(5672).start(closed=True)
    await proxy.refuse()
    app = create_celery(
        settings.model_copy(
            update={"amqp_url": SecretStr(proxy.url("amqp://guest:guest@127.0.0.1:{port}/"))}
        )
    )
    request = ProcessOrder(order_id=uuid.uuid4(), event_id=uuid.uuid4())
    task = app.tasks[PROCESS_ORDER_TASK]

    def messages(text: str) -> int:
        return sum(text in record.getMessage() for record in caplog.records)

    try:
        running = asyncio.create_task(
            asyncio.to_thread(lambda: task.apply(kwargs=request.model_dump(mode="json")).get())
        )
        # Three failed rounds of kombu's own reconnecting retries: the task retried twice.
        await eventually(lambda: proxy.refused >= 9, timeout=30)
        await proxy.open()
        result = await asyncio.wait_for(running, 30)
    finally:
        await proxy.close()
        app.resources().close()

    assert messages(f"processing order {request.order_id}") == 1
    assert messages(f"Order {request.order_id} processed") == 1
    assert result == "reported"  # the last run only reported
    message = await processed_queue.get(no_ack=True, timeout=5)
    assert parse_envelope(message.body).data.order_id == request.order_id
    assert await processed_queue.get(no_ack=True, fail=False) is None
    # Processed and reported: a later delivery of the task changes nothing.
    again = create_celery(settings)
    try:
        outcome = await asyncio.to_thread(
            lambda: (
                again.tasks[PROCESS_ORDER_TASK].apply(kwargs=request.model_dump(mode="json")).get()
            )
        )
    finally:
        again.resources().close()
    assert outcome == "skipped"
