"""The outbox relay against the real PostgreSQL and RabbitMQ. What it published is read from a
queue of the test's own, bound to every routing key of the test's exchange, and counted by
event id: nothing may be missing and nothing may arrive twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from order_testing import AMQP_URL, eventually, free_port, new_order_event
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from order_common.bus import connect, declare_exchange, publish_envelope
from order_common.db import build_session_factory
from order_common.dlq import count_messages
from order_common.events import EventType
from orders_service.outbox_publisher import BatchResult, OutboxPublisher
from orders_service.relay import OutboxRelay, purge_published
from orders_service.settings import Settings

from .conftest import VALID_ORDER, User, add_outbox_events, published_events, running_relay

MakeSettings = Callable[..., Settings]


async def outbox_rows(relay_db: AsyncEngine) -> dict[str, dict[str, Any]]:
    async with relay_db.connect() as conn:
        result = await conn.execute(
            text("SELECT id, published_at, attempts, created_at FROM outbox_events")
        )
        return {str(row.id): dict(row._mapping) for row in result}


class BrokerSwitch:
    """A TCP proxy in front of RabbitMQ, switched on and off by the test: the broker as the
    relay sees it. Off, its port is closed (connections are refused) and every connection
    through it is cut."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        # The robust connection retries every half second once it has connected.
        return f"amqp://guest:guest@127.0.0.1:{self.port}/?reconnect_interval=0.5"

    async def on(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.port)

    async def off(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def _link(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        broker_in, broker_out = await asyncio.open_connection("127.0.0.1", 5672)
        self._links |= {client_out, broker_out}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pipe(client_in, broker_out), pipe(broker_in, client_out))


async def test_orders_wait_in_the_outbox_while_rabbitmq_is_down_and_each_is_published_once(
    relay_settings: MakeSettings,
    relay_database_url: str,
    relay_db: AsyncEngine,
    amqp: AbstractRobustConnection,
    start_app: Any,
    user: User,
) -> None:
    broker = BrokerSwitch()
    settings = relay_settings(amqp_url=broker.url)

    async with (
        published_events(amqp, settings) as seen,
        start_app(database_url=relay_database_url) as (_, client),
        running_relay(settings),
    ):

        async def place_orders(count: int) -> None:
            for _ in range(count):
                response = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
                assert response.status_code == 201, response.text

        # The relay starts while the broker's port is closed; the API takes orders regardless.
        await place_orders(5)
        await asyncio.sleep(1.0)
        rows = await outbox_rows(relay_db)
        assert len(rows) == 5
        assert all(row["published_at"] is None and row["attempts"] == 0 for row in rows.values())
        assert seen == []

        await broker.on()
        await eventually(lambda: len(seen) == 5)

        # The broker goes away under a connected relay, and comes back.
        await broker.off()
        await asyncio.sleep(0.3)
        await place_orders(5)
        await asyncio.sleep(1.0)
        assert len(seen) == 5
        await broker.on()
        await eventually(lambda: len(seen) == 10, timeout=15)
        await asyncio.sleep(0.5)  # room for a duplicate to show up

    rows = await outbox_rows(relay_db)
    assert len(rows) == 10
    assert all(row["published_at"] is not None for row in rows.values())
    assert Counter(seen) == Counter(rows.keys())  # every event, each exactly once
    await broker.off()


async def test_two_relays_over_one_backlog_publish_each_event_once(
    relay_settings: MakeSettings, relay_db: AsyncEngine, amqp: AbstractRobustConnection
) -> None:
    settings = relay_settings(relay_batch_size=10)
    event_ids = await add_outbox_events(relay_db, 200)
    stop = asyncio.Event()
    relays: list[OutboxRelay] = []
    connections = [await connect(AMQP_URL, name=f"relay-test-{n}") for n in range(2)]
    try:
        async with published_events(amqp, settings) as seen:
            for connection in connections:
                channel = connection.channel()
                await channel.initialize()
                exchange = await declare_exchange(channel, settings.bus_topology())
                publisher = OutboxPublisher(
                    build_session_factory(relay_db), exchange, batch_size=10
                )
                relays.append(
                    OutboxRelay(settings, build_session_factory(relay_db), publisher, channel)
                )
            async with asyncio.TaskGroup() as tasks:
                for one in relays:
                    tasks.create_task(one.run(stop))
                await eventually(lambda: len(seen) == 200, timeout=20)
                await asyncio.sleep(0.5)
                stop.set()
    finally:
        for connection in connections:
            await connection.close()

    assert Counter(seen) == Counter(event_ids)
    assert sorted(one.published for one in relays)[0] > 0, "both relays took part"
    assert sum(one.published for one in relays) == 200
    assert all(row["published_at"] for row in (await outbox_rows(relay_db)).values())


async def test_a_notify_wakes_the_relay_long_before_its_poll(
    relay_settings: MakeSettings,
    relay_database_url: str,
    amqp: AbstractRobustConnection,
    start_app: Any,
    user: User,
) -> None:
    """The API's NOTIFY, sent after the order's commit, wakes the relay: the event is out in
    well under a second although the relay would poll only after a minute."""
    settings = relay_settings(relay_poll_interval_seconds=60)
    async with (
        published_events(amqp, settings) as seen,
        start_app(database_url=relay_database_url) as (_, client),
        running_relay(settings) as process,
    ):
        await asyncio.wait_for(process.started.wait(), timeout=10)
        assert process.relay is not None
        await asyncio.wait_for(process.relay.listening.wait(), timeout=10)
        await asyncio.sleep(0.2)  # the first poll ran on the empty outbox; now only NOTIFY
        response = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        assert response.status_code == 201, response.text
        await eventually(lambda: len(seen) == 1, timeout=3)


async def test_events_the_broker_nacks_stay_unpublished_until_it_confirms(
    relay_settings: MakeSettings, relay_db: AsyncEngine, amqp: AbstractRobustConnection
) -> None:
    settings = relay_settings()
    event_ids = await add_outbox_events(relay_db, 3)
    async with published_events(amqp, settings) as seen:
        channel = await amqp.channel()
        exchange = await declare_exchange(channel, settings.bus_topology())
        # A full queue that rejects publishes: the broker answers each one with a nack.
        full = await channel.declare_queue(
            f"{settings.bus_queue_prefix}.full",
            auto_delete=True,
            arguments={"x-max-length": 0, "x-overflow": "reject-publish"},
        )
        await full.bind(exchange, routing_key=EventType.NEW_ORDER.value)
        publisher = OutboxPublisher(build_session_factory(relay_db), exchange, batch_size=10)

        assert await publisher.publish_batch() == BatchResult(
            claimed=3, published=0, failed=3, outage=3
        )
        rows = await outbox_rows(relay_db)
        assert {row["published_at"] for row in rows.values()} == {None}
        # Every publish nacked: the queue cannot take any, which is no row's fault.
        assert {row["attempts"] for row in rows.values()} == {0}
        await full.delete(if_unused=False, if_empty=False)
        assert await publisher.publish_batch() == BatchResult(claimed=3, published=3, failed=0)
        await eventually(lambda: len(seen) == 6)  # the first 3 reached our queue, unconfirmed
        await channel.close()

    rows = await outbox_rows(relay_db)
    assert all(row["published_at"] is not None for row in rows.values())
    assert {row["attempts"] for row in rows.values()} == {0}
    assert Counter(seen) == Counter({event_id: 2 for event_id in event_ids})


async def test_events_claimed_while_the_broker_is_gone_stay_unpublished(
    relay_settings: MakeSettings, relay_db: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    settings = relay_settings()
    await add_outbox_events(relay_db, 2)
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    exchange = await declare_exchange(channel, settings.bus_topology())
    await connection.close()  # the link is gone before the relay publishes
    publisher = OutboxPublisher(build_session_factory(relay_db), exchange, batch_size=10)
    caplog.set_level(logging.WARNING, logger="orders_service.outbox_publisher")

    assert await publisher.publish_batch() == BatchResult(
        claimed=2, published=0, failed=2, outage=2
    )

    # An outage is not the rows' fault: it spends none of their attempts.
    rows = await outbox_rows(relay_db)
    assert [(row["published_at"], row["attempts"]) for row in rows.values()] == [(None, 0)] * 2
    assert any("not confirmed by the broker" in r.getMessage() for r in caplog.records)


async def test_published_events_past_retention_are_deleted_and_unpublished_never(
    relay_settings: MakeSettings, relay_db: AsyncEngine
) -> None:
    relay_settings()  # empties the outbox
    old_published, recent_published, old_unpublished, *more_old = await add_outbox_events(
        relay_db, 6
    )
    now = datetime.now(UTC)
    ages = {
        old_published: (now - timedelta(hours=30), now - timedelta(hours=25)),
        recent_published: (now - timedelta(hours=2), now - timedelta(hours=1)),
        old_unpublished: (now - timedelta(hours=48), None),
        **{
            event_id: (now - timedelta(hours=40), now - timedelta(hours=39))
            for event_id in more_old
        },
    }
    async with relay_db.begin() as conn:
        for event_id, (created_at, published_at) in ages.items():
            await conn.execute(
                text(
                    "UPDATE outbox_events SET created_at = :created, published_at = :published "
                    "WHERE id = :id"
                ),
                {"id": event_id, "created": created_at, "published": published_at},
            )

    deleted = await purge_published(build_session_factory(relay_db), timedelta(hours=24), batch=2)

    assert deleted == 1 + len(more_old)
    assert set(await outbox_rows(relay_db)) == {recent_published, old_unpublished}


class FaultyExchange:
    """The real exchange of the test, with a fault injected into the relay's batch: publishing
    the message ``fail_id`` fails once (as one the broker never confirmed), ``after_last``
    runs once the ``batch``-th publish was confirmed, and ``cut`` runs just before the
    ``cut_at``-th publish is sent."""

    def __init__(
        self,
        exchange: Any,
        *,
        fail_id: str | None = None,
        batch: int = 0,
        after_last: Callable[[], Any] | None = None,
        cut_at: int = 0,
        cut: Callable[[], Any] | None = None,
    ) -> None:
        self._exchange = exchange
        self._fail_id = fail_id
        self._batch = batch
        self._after_last = after_last
        self._cut_at = cut_at
        self._cut = cut
        self._calls = 0
        self._confirmed = 0

    @property
    def name(self) -> str:
        return str(self._exchange.name)

    async def publish(self, message: aio_pika.Message, *args: Any, **kwargs: Any) -> Any:
        if self._fail_id is not None and message.message_id == self._fail_id:
            self._fail_id = None
            raise ConnectionResetError("the link dropped under this publish")
        self._calls += 1
        if self._cut is not None and self._calls == self._cut_at:
            await self._cut()
        confirm = await self._exchange.publish(message, *args, **kwargs)
        self._confirmed += 1
        if self._after_last is not None and self._confirmed == self._batch:
            await self._after_last()
        return confirm


async def test_a_publish_failing_mid_batch_leaves_only_its_event_for_the_next_batch(
    relay_settings: MakeSettings, relay_db: AsyncEngine, amqp: AbstractRobustConnection
) -> None:
    settings = relay_settings()
    event_ids = await add_outbox_events(relay_db, 20)
    async with published_events(amqp, settings) as seen:
        channel = await amqp.channel()
        exchange = FaultyExchange(
            await declare_exchange(channel, settings.bus_topology()), fail_id=event_ids[7]
        )
        publisher = OutboxPublisher(
            build_session_factory(relay_db),
            exchange,  # type: ignore[arg-type]
            batch_size=20,
        )

        # All 20 are in flight at once; the one that failed stays, the 19 others are marked.
        assert await publisher.publish_batch() == BatchResult(
            claimed=20, published=19, failed=1, outage=1
        )
        rows = await outbox_rows(relay_db)
        assert [k for k, row in rows.items() if row["published_at"] is None] == [event_ids[7]]
        assert rows[event_ids[7]]["attempts"] == 0  # a dropped link costs no attempt

        assert await publisher.publish_batch() == BatchResult(claimed=1, published=1, failed=0)
        assert await publisher.publish_batch() == BatchResult()
        await eventually(lambda: len(seen) == 20)
        await asyncio.sleep(0.5)  # room for a duplicate to show up
        await channel.close()

    assert Counter(seen) == Counter(event_ids)  # every event, each exactly once
    assert all(row["published_at"] for row in (await outbox_rows(relay_db)).values())


async def test_a_crash_between_publishing_and_marking_publishes_again_under_the_same_ids(
    relay_settings: MakeSettings, relay_db: AsyncEngine, amqp: AbstractRobustConnection
) -> None:
    """The broker confirmed the whole batch, then the relay's database connection died before
    the published mark committed (a crash, a failover): the rows are still unpublished and the
    next batch sends them again -- with the same event ids and bodies, which is what every
    consumer de-duplicates on (at least once, never lost)."""
    settings = relay_settings()
    event_ids = await add_outbox_events(relay_db, 10)

    async def crash() -> None:
        async with relay_db.connect() as conn:
            await conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )

    bodies: dict[str, set[bytes]] = {}
    deliveries: Counter[str] = Counter()
    channel = await amqp.channel()
    real = await declare_exchange(channel, settings.bus_topology())
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(real, routing_key="#")

    async def on_message(message: AbstractIncomingMessage) -> None:
        bodies.setdefault(str(message.message_id), set()).add(message.body)
        deliveries[str(message.message_id)] += 1
        await message.ack()

    await queue.consume(on_message)
    crashing = OutboxPublisher(
        build_session_factory(relay_db),
        FaultyExchange(real, batch=10, after_last=crash),  # type: ignore[arg-type]
        batch_size=10,
    )
    with pytest.raises(DBAPIError):  # the connection died under the published mark
        await crashing.publish_batch()
    rows = await outbox_rows(relay_db)
    assert {row["published_at"] for row in rows.values()} == {None}

    publisher = OutboxPublisher(build_session_factory(relay_db), real, batch_size=10)
    assert await publisher.publish_batch() == BatchResult(claimed=10, published=10, failed=0)
    await eventually(lambda: sum(deliveries.values()) == 20)
    await asyncio.sleep(0.3)  # room for a third copy to show up
    await channel.close()

    # Each event twice, both copies byte for byte the same event (one body per id).
    assert deliveries == Counter({event_id: 2 for event_id in event_ids})
    assert all(len(copies) == 1 for copies in bodies.values())
    assert all(row["published_at"] for row in (await outbox_rows(relay_db)).values())


async def test_the_broker_dropping_mid_batch_loses_nothing_and_repeats_only_the_unconfirmed(
    relay_settings: MakeSettings, relay_db: AsyncEngine, amqp: AbstractRobustConnection
) -> None:
    """The link to RabbitMQ is cut while a batch of 20 is in flight (after 5 were sent): the
    confirmed events are marked and never sent again; the others stay in the outbox and go out
    once the broker is back. Nothing is lost; only an event whose confirm was lost with the
    link may reach the bus twice, under its one event id (consumers de-duplicate on it)."""
    broker = BrokerSwitch()
    await broker.on()
    settings = relay_settings(amqp_url=broker.url)
    event_ids = await add_outbox_events(relay_db, 20)
    connection = await connect(broker.url, name="relay-test-drop")
    try:
        async with published_events(amqp, settings) as seen:
            channel = connection.channel()
            await channel.initialize()
            real = await declare_exchange(channel, settings.bus_topology())
            publisher = OutboxPublisher(
                build_session_factory(relay_db),
                FaultyExchange(real, cut_at=6, cut=broker.off),  # type: ignore[arg-type]
                batch_size=20,
            )
            first = await publisher.publish_batch()
            # The 15 sent after the cut fail; the 5 before it may or may not have been confirmed.
            assert first.claimed == 20
            assert first.published <= 5
            assert first.failed == 20 - first.published
            assert first.outage == first.failed
            rows = await outbox_rows(relay_db)
            confirmed = {k for k, row in rows.items() if row["published_at"] is not None}
            assert len(confirmed) == first.published
            assert {row["attempts"] for row in rows.values()} == {0}  # an outage costs none

            await broker.on()
            await asyncio.wait_for(channel.ready(), timeout=15)
            again = OutboxPublisher(build_session_factory(relay_db), real, batch_size=20)
            assert await again.publish_batch() == BatchResult(
                claimed=first.failed, published=first.failed, failed=0
            )
            await eventually(lambda: set(seen) == set(event_ids), timeout=10)
            await asyncio.sleep(0.5)  # room for more copies to show up
    finally:
        await connection.close()
        await broker.off()

    counts = Counter(seen)
    assert set(counts) == set(event_ids)  # nothing lost
    assert all(counts[event_id] == 1 for event_id in confirmed)  # a confirm is final
    assert all(counts[event_id] <= 2 for event_id in event_ids)
    assert all(row["published_at"] for row in (await outbox_rows(relay_db)).values())


async def test_the_relay_publishes_at_once_while_unrouted_events_of_other_types_wait(
    relay_settings: MakeSettings,
    relay_db: AsyncEngine,
    amqp: AbstractRobustConnection,
) -> None:
    """Adopting the unrouted queue runs beside the relay, not before it, and leaves the
    events this process does not subscribe to where they are (their TTL runs on)."""
    settings = relay_settings()
    topology = settings.bus_topology()
    channel = await amqp.channel()
    exchange = await declare_exchange(channel, topology)
    waiting = 300  # nobody is bound for new_order yet: they all go to the unrouted queue
    await asyncio.gather(*(publish_envelope(exchange, new_order_event()) for _ in range(waiting)))
    assert await count_messages(channel, topology.unrouted_queue) == waiting

    async with published_events(amqp, settings) as seen, running_relay(settings) as process:
        await asyncio.wait_for(process.started.wait(), timeout=10)
        assert process.adoption is not None
        assert not process.adoption.done()  # the relay did not wait for it
        [event_id] = await add_outbox_events(relay_db, 1)
        await eventually(lambda: event_id in seen)
        assert await process.adoption == 0  # new_order is not this process's
    assert await count_messages(channel, topology.unrouted_queue) == waiting
    await channel.close()
