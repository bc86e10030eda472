"""The event bus against the real RabbitMQ: every test has its own exchange and queues."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractRobustConnection
from order_testing import (
    AMQP_URL,
    amqp_connection,
    delete_topology,
    eventually,
    new_order_event,
    run_id,
    run_topology,
)
from order_testing import queue_count as counter

from order_common.aio import RetryPolicy
from order_common.bus import (
    ATTEMPTS_HEADER,
    ERROR_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    REASON_HEADER,
    REDRIVES_HEADER,
    RejectMessage,
    Topology,
    dead_letter_queue_name,
    declare_exchange,
    declare_subscription,
    publish_envelope,
    retry_queue_name,
)
from order_common.delivery import Delivery
from order_common.dlq import adopt_unrouted, amqp_url_from_env, count_messages, peek, redrive
from order_common.events import Envelope, EventType, OrderStatusChanged, envelope, parse_envelope
from order_common.orders import OrderStatus
from order_common.subscriber import Subscriber

SUBSCRIBER = "tester"


@pytest.fixture(scope="module")
async def amqp() -> AsyncIterator[AbstractRobustConnection]:
    async with amqp_connection(AMQP_URL, name="order-common-tests") as connection:
        yield connection


@pytest.fixture
async def topology(amqp: AbstractRobustConnection) -> AsyncIterator[Topology]:
    topology = run_topology(run_id())
    yield topology
    await delete_topology(amqp, topology, [(SUBSCRIBER, event_type) for event_type in EventType])


@pytest.fixture
async def channel(amqp: AbstractRobustConnection) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    channel = await amqp.channel()
    yield channel
    await channel.close()


async def publish(
    channel: aio_pika.abc.AbstractChannel, topology: Topology, env: Envelope[Any]
) -> None:
    exchange = await declare_exchange(channel, topology)
    await publish_envelope(exchange, env)


def test_the_back_off_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay=1.0, max_delay=5.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


async def test_declaring_a_subscription_twice_is_idempotent(
    channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    for _ in range(2):
        queue = await declare_subscription(channel, topology, SUBSCRIBER, EventType.NEW_ORDER)
    assert queue.name == f"{topology.queue_prefix}.{SUBSCRIBER}.new_order"
    for name in (queue.name, retry_queue_name(queue.name), dead_letter_queue_name(queue.name)):
        assert await count_messages(channel, name) == 0  # exists (passive declare)

    await publish(channel, topology, new_order_event())
    await eventually(counter(channel, queue.name, 1))


async def test_publish_envelope_waits_for_the_confirm_and_sends_a_persistent_json_message(
    channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    queue = await declare_subscription(channel, topology, SUBSCRIBER, EventType.NEW_ORDER)
    sent = new_order_event()
    await publish_envelope(channel, sent, exchange=topology.exchange, headers={"traceparent": "x"})

    message = await queue.get(no_ack=True, timeout=5)
    assert parse_envelope(message.body) == sent
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.message_id == str(sent.event_id)
    assert message.content_type == "application/json"
    assert message.routing_key == "new_order"
    assert message.headers["traceparent"] == "x"


async def test_publishing_on_a_channel_without_confirms_is_refused(
    amqp: AbstractRobustConnection, topology: Topology
) -> None:
    channel = await amqp.channel(publisher_confirms=False)
    exchange = await declare_exchange(channel, topology)
    with pytest.raises(RuntimeError, match="confirms"):
        await publish_envelope(exchange, new_order_event())
    await channel.close()


async def test_a_message_no_queue_is_bound_for_is_kept_and_can_be_redriven(
    amqp: AbstractRobustConnection, channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    sent = new_order_event()
    await publish(channel, topology, sent)  # before any subscriber exists
    assert await count_messages(channel, topology.unrouted_queue) == 1

    queue = await declare_subscription(channel, topology, SUBSCRIBER, EventType.NEW_ORDER)
    assert await redrive(amqp, topology.unrouted_queue) == 1
    message = await queue.get(no_ack=True, timeout=5)
    assert parse_envelope(message.body).event_id == sent.event_id


async def test_a_started_process_adopts_events_published_before_its_queue_existed(
    amqp: AbstractRobustConnection, channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    sent = new_order_event()
    await publish(channel, topology, sent)  # the relay ran before the consumer's first start
    received: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        received.append(delivery)

    subscriber = Subscriber(amqp, topology, SUBSCRIBER, EventType.NEW_ORDER, handler)
    await subscriber.start()
    try:
        # Starting consumes only its own queue; the re-drive is the process's next step.
        assert await count_messages(channel, topology.unrouted_queue) == 1
        assert await adopt_unrouted(amqp, topology, [EventType.NEW_ORDER]) == 1
        await eventually(lambda: len(received) == 1)
    finally:
        await subscriber.stop()
    assert received[0].envelope.event_id == sent.event_id
    assert await count_messages(channel, topology.unrouted_queue) == 0


def status_changed_event() -> Envelope[Any]:
    return envelope(
        EventType.ORDER_STATUS_CHANGED,
        OrderStatusChanged(
            order_id=uuid.uuid4(),
            user_id=1,
            from_status=OrderStatus.PENDING,
            to_status=OrderStatus.PAID,
            changed_at=datetime.now(UTC),
        ),
    )


async def test_adopting_moves_only_the_types_the_process_subscribes_to_and_leaves_the_rest(
    amqp: AbstractRobustConnection, channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    # Nobody subscribes to order_status_changed: it must keep its place and its TTL (not be
    # republished at every start), and not be delivered twice in one pass.
    ignored = [status_changed_event() for _ in range(3)]
    wanted = new_order_event()
    await publish(channel, topology, ignored[0])
    await publish(channel, topology, wanted)
    for event in ignored[1:]:
        await publish(channel, topology, event)
    received: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        received.append(delivery)

    subscriber = Subscriber(amqp, topology, SUBSCRIBER, EventType.NEW_ORDER, handler)
    await subscriber.start()
    try:
        assert await adopt_unrouted(amqp, topology, [subscriber.event_type]) == 1
        await eventually(lambda: len(received) == 1)
        assert await adopt_unrouted(amqp, topology, [subscriber.event_type]) == 0
    finally:
        await subscriber.stop()
    assert received[0].envelope.event_id == wanted.event_id
    assert await count_messages(channel, topology.unrouted_queue) == 3
    left = await peek(amqp, topology.unrouted_queue)
    assert [parse_envelope(letter.body).event_id for letter in left] == [
        event.event_id for event in ignored
    ]
    # the broker's copies, never republished (a republish would add x-redrives)
    assert all(REDRIVES_HEADER not in letter.headers for letter in left)


async def test_a_failing_handler_is_retried_with_back_off_then_dead_lettered_with_its_reason(
    amqp: AbstractRobustConnection, channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    runs: list[tuple[float, int]] = []

    async def handler(delivery: Delivery) -> None:
        runs.append((time.monotonic(), delivery.attempt))
        raise RuntimeError("payment service down")

    policy = RetryPolicy(max_attempts=3, base_delay=0.3, max_delay=5)
    subscriber = Subscriber(amqp, topology, SUBSCRIBER, EventType.NEW_ORDER, handler, retry=policy)
    await subscriber.start()
    try:
        sent = new_order_event()
        await publish(channel, topology, sent)
        dlq = dead_letter_queue_name(subscriber.queue_name)
        await eventually(counter(channel, dlq, 1))
    finally:
        await subscriber.stop()

    assert [attempt for _, attempt in runs] == [1, 2, 3]
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(runs)]
    assert gaps[0] >= 0.3 - 0.05
    assert gaps[1] >= 0.6 - 0.05

    [letter] = await peek(amqp, dlq)
    assert letter.reason == "max-attempts"
    assert letter.attempts == 3
    assert "payment service down" in str(letter.error)
    assert letter.original_routing_key == "new_order"
    assert parse_envelope(letter.body).event_id == sent.event_id
    assert await count_messages(channel, dlq) == 1  # peeking leaves it there


async def test_a_poison_message_is_dead_lettered_at_once_and_the_next_one_is_handled(
    amqp: AbstractRobustConnection, channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    handled: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery)

    async with Subscriber(amqp, topology, SUBSCRIBER, EventType.NEW_ORDER, handler) as sub:
        exchange = await declare_exchange(channel, topology)
        await exchange.publish(aio_pika.Message(b"not json"), routing_key="new_order")
        good = new_order_event()
        await publish_envelope(exchange, good)
        await eventually(lambda: bool(handled))
        dlq = dead_letter_queue_name(sub.queue_name)
        await eventually(counter(channel, dlq, 1))

    assert [d.envelope.event_id for d in handled] == [good.event_id]
    message = await (await channel.declare_queue(dlq, passive=True)).get(no_ack=True, timeout=5)
    assert message.body == b"not json"
    assert message.headers[REASON_HEADER] == "poison"
    assert "validation error" in str(message.headers[ERROR_HEADER])
    assert message.headers[ORIGINAL_ROUTING_KEY_HEADER] == "new_order"
    assert message.headers[ATTEMPTS_HEADER] == 0


async def test_a_handler_rejecting_a_message_dead_letters_it_without_retrying(
    amqp: AbstractRobustConnection, channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    runs = 0

    async def handler(delivery: Delivery) -> None:
        nonlocal runs
        runs += 1
        raise RejectMessage("order belongs to nobody")

    async with Subscriber(amqp, topology, SUBSCRIBER, EventType.NEW_ORDER, handler) as sub:
        await publish(channel, topology, new_order_event())
        await eventually(counter(channel, dead_letter_queue_name(sub.queue_name), 1))

    [letter] = await peek(amqp, dead_letter_queue_name(sub.queue_name))
    assert (runs, letter.reason) == (1, "rejected")


async def test_redrive_returns_dead_letters_to_the_main_queue_with_attempts_reset(
    amqp: AbstractRobustConnection, channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    healthy = False
    handled: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        if not healthy:
            raise RuntimeError("not yet")
        handled.append(delivery)

    subscriber = Subscriber(
        amqp, topology, SUBSCRIBER, EventType.NEW_ORDER, handler, retry=RetryPolicy(2, 0.1)
    )
    await subscriber.start()
    try:
        events = [new_order_event() for _ in range(3)]
        for event in events:
            await publish(channel, topology, event)
        dlq = dead_letter_queue_name(subscriber.queue_name)
        await eventually(counter(channel, dlq, 3))

        healthy = True
        assert await redrive(amqp, dlq) == 3
        await eventually(lambda: len(handled) == 3)
    finally:
        await subscriber.stop()

    assert {d.envelope.event_id for d in handled} == {e.event_id for e in events}
    assert all(d.attempt == 1 for d in handled)
    assert await count_messages(channel, dlq) == 0


async def test_a_message_that_keeps_killing_its_consumer_reaches_the_dlq_by_delivery_limit(
    amqp: AbstractRobustConnection, topology: Topology
) -> None:
    setup = await amqp.channel()
    queue = await declare_subscription(
        setup, topology, SUBSCRIBER, EventType.NEW_ORDER, delivery_limit=1
    )
    await publish(setup, topology, new_order_event())
    await eventually(counter(setup, queue.name, 1))
    for _ in range(2):  # a consumer that dies holding the message: its channel closes
        crashing = await amqp.channel()
        held = await (await crashing.declare_queue(queue.name, passive=True)).get(timeout=5)
        assert held is not None
        await crashing.close()

    dlq = dead_letter_queue_name(queue.name)
    await eventually(counter(setup, dlq, 1))
    [letter] = await peek(amqp, dlq)
    assert letter.reason == "delivery_limit"
    await setup.close()


async def test_stop_lets_the_in_flight_handler_finish_and_ack(
    amqp: AbstractRobustConnection, channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    started = asyncio.Event()
    finished: list[uuid.UUID] = []

    async def slow_handler(delivery: Delivery) -> None:
        started.set()
        await asyncio.sleep(1.0)
        finished.append(delivery.envelope.event_id)

    subscriber = Subscriber(amqp, topology, SUBSCRIBER, EventType.NEW_ORDER, slow_handler)
    await subscriber.start()
    sent = new_order_event()
    await publish(channel, topology, sent)
    await asyncio.wait_for(started.wait(), 5)
    await subscriber.stop(grace_period=10)

    assert finished == [sent.event_id]
    await asyncio.sleep(0.5)  # an unacked message would be back in the queue by now
    assert await count_messages(channel, subscriber.queue_name) == 0


async def run_order_bus(*args: str, env: dict[str, str] | None = None, ok: bool = True) -> str:
    """The installed ``order-bus`` script; with ``env``, that environment instead of --amqp-url."""
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "order-bus"),
        *(() if env is not None else ("--amqp-url", AMQP_URL)),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=None if env is None else {"PATH": os.environ.get("PATH", ""), **env},
    )
    out, err = await process.communicate()
    assert (process.returncode == 0) is ok, err.decode()
    return out.decode() if ok else err.decode()


def test_order_bus_takes_the_broker_from_the_pods_own_variables() -> None:
    assert amqp_url_from_env({}) == "amqp://guest:guest@127.0.0.1:5672/"
    assert amqp_url_from_env({"CONSUMER_AMQP_URL": "amqp://c"}) == "amqp://c"
    assert amqp_url_from_env({"WORKER_AMQP_URL": "amqp://w", "ORDERS_AMQP_URL": "amqp://o"}) == (
        "amqp://o"
    )
    assert amqp_url_from_env({"BUS_AMQP_URL": "amqp://b", "ORDERS_AMQP_URL": "amqp://o"}) == (
        "amqp://b"
    )
    assert amqp_url_from_env({"BUS_AMQP_URL": "", "ORDERS_AMQP_URL": "amqp://o"}) == "amqp://o"


@pytest.mark.parametrize("variable", ["ORDERS_AMQP_URL", "CONSUMER_AMQP_URL"])
async def test_order_bus_in_a_pod_reads_the_services_broker_url(
    channel: aio_pika.abc.AbstractChannel, topology: Topology, variable: str
) -> None:
    queue = await declare_subscription(channel, topology, SUBSCRIBER, EventType.NEW_ORDER)
    dlq = dead_letter_queue_name(queue.name)

    # What `kubectl exec deploy/<release>-orders -- order-bus dlq show` runs with: no flag.
    shown = await run_order_bus("dlq", "show", "--queue", queue.name, env={variable: AMQP_URL})
    assert json.loads(shown.splitlines()[0]) == {"queue": dlq, "messages": 0}
    # The variable really is the one used: wrong credentials in it are refused by the broker.
    broker = urlsplit(AMQP_URL)
    netloc = f"nobody-here:wrong@{broker.hostname}:{broker.port or 5672}"
    bad_url = broker._replace(netloc=netloc).geturl()
    refused = await run_order_bus(
        "dlq", "show", "--queue", queue.name, env={variable: bad_url}, ok=False
    )
    assert "order-bus:" in refused


async def test_the_order_bus_command_shows_and_redrives_a_dead_letter_queue(
    channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    queue = await declare_subscription(channel, topology, SUBSCRIBER, EventType.NEW_ORDER)
    dlq = dead_letter_queue_name(queue.name)
    dlx = await channel.get_exchange(topology.dead_letter_exchange)
    await dlx.publish(
        aio_pika.Message(b"{}", headers={REASON_HEADER: "poison"}), routing_key=queue.name
    )
    await eventually(counter(channel, dlq, 1))

    shown = await run_order_bus("dlq", "show", "--queue", queue.name)
    lines = [json.loads(line) for line in shown.splitlines()]
    assert lines[0] == {"queue": dlq, "messages": 1}
    assert lines[1]["reason"] == "poison"
    assert lines[1]["body"] == "{}"

    moved = await run_order_bus("dlq", "redrive", "--queue", dlq)
    assert json.loads(moved) == {"queue": dlq, "redriven": 1}
    assert await count_messages(channel, queue.name) == 1
    assert await count_messages(channel, dlq) == 0


async def test_a_batch_failing_for_one_event_retries_and_dead_letters_only_that_one(
    amqp: AbstractRobustConnection, channel: aio_pika.abc.AbstractChannel, topology: Topology
) -> None:
    """The batch handler fails whenever one bad event is in its batch: the batch runs again
    one delivery at a time, so the innocent ones succeed at their first attempt and only the
    bad one goes through the retries to the dead-letter queue."""
    warm_up, bad = new_order_event(), new_order_event()
    good = [new_order_event() for _ in range(4)]
    batches: list[list[tuple[uuid.UUID, int]]] = []
    done: dict[uuid.UUID, int] = {}

    async def handler(deliveries: Sequence[Delivery]) -> list[None]:
        batches.append([(d.envelope.event_id, d.attempt) for d in deliveries])
        if deliveries[0].envelope.event_id == warm_up.event_id:
            await asyncio.sleep(0.5)  # the others arrive meanwhile: one batch next
        if any(d.envelope.event_id == bad.event_id for d in deliveries):
            raise RuntimeError("bad event")
        for d in deliveries:
            done[d.envelope.event_id] = d.attempt
        return [None] * len(deliveries)

    policy = RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=0.2)
    subscriber = Subscriber(
        amqp, topology, SUBSCRIBER, EventType.NEW_ORDER, batch_handler=handler, retry=policy
    )
    await subscriber.start()
    try:
        for event in [warm_up, good[0], good[1], bad, good[2], good[3]]:
            await publish(channel, topology, event)
        dlq = dead_letter_queue_name(subscriber.queue_name)
        await eventually(counter(channel, dlq, 1))
    finally:
        await subscriber.stop()

    assert any(len(b) > 1 and bad.event_id in {e for e, _ in b} for b in batches)
    assert done == {event.event_id: 1 for event in [warm_up, *good]}  # each at its 1st try
    [letter] = await peek(amqp, dlq)
    assert parse_envelope(letter.body).event_id == bad.event_id
    assert letter.attempts == 3
    assert await count_messages(channel, subscriber.queue_name) == 0
