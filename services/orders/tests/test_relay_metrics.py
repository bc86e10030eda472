"""What the relay reports besides publishing: the outbox backlog on its metrics, and the trace
context each outbox row keeps for the publish to continue."""

from __future__ import annotations

import uuid

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from order_testing import new_order_event
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from order_common.db import build_session_factory
from order_common.events import Envelope, NewOrder
from orders_service.relay import measure_backlog
from orders_service.uow import OrdersUnitOfWork


def new_order() -> Envelope[NewOrder]:
    return new_order_event(name="Pen", price="1.00")


async def add(relay_db: AsyncEngine, count: int) -> None:
    async with OrdersUnitOfWork(build_session_factory(relay_db)) as uow:
        for _ in range(count):
            await uow.outbox.add(new_order())
        await uow.commit()


async def empty_outbox(relay_db: AsyncEngine) -> None:
    async with relay_db.begin() as conn:
        await conn.execute(text("DELETE FROM outbox_events"))


def gauge(name: str) -> float:
    value = REGISTRY.get_sample_value(name)
    assert value is not None, name
    return value


async def test_the_relay_reports_the_backlog_and_the_age_of_its_oldest_event(
    relay_db: AsyncEngine,
) -> None:
    await empty_outbox(relay_db)
    try:
        await measure_backlog(build_session_factory(relay_db))
        assert gauge("orders_outbox_backlog") == 0
        assert gauge("orders_outbox_oldest_age_seconds") == 0

        await add(relay_db, 3)
        async with relay_db.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE outbox_events SET created_at = now() - interval '90 seconds' "
                    "WHERE id = (SELECT id FROM outbox_events LIMIT 1)"
                )
            )
            # A published event is no backlog, however old.
            await conn.execute(
                text(
                    "INSERT INTO outbox_events (id, event_type, payload, created_at, "
                    "published_at) VALUES (:id, 'new_order', '{}', now() - interval '1 hour', "
                    "now())"
                ),
                {"id": uuid.uuid4()},
            )
        await measure_backlog(build_session_factory(relay_db))
        assert gauge("orders_outbox_backlog") == 3
        assert 89 <= gauge("orders_outbox_oldest_age_seconds") < 150
    finally:
        await empty_outbox(relay_db)


async def test_an_outbox_row_keeps_the_trace_context_of_the_request_that_wrote_it(
    relay_db: AsyncEngine,
) -> None:
    trace_id, span_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    request = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))
    event = new_order()
    try:
        with trace.use_span(NonRecordingSpan(request)):
            async with OrdersUnitOfWork(build_session_factory(relay_db)) as uow:
                await uow.outbox.add(event)
                await uow.commit()
        async with relay_db.connect() as conn:
            headers = (
                await conn.execute(
                    text("SELECT headers FROM outbox_events WHERE id = :id"),
                    {"id": event.event_id},
                )
            ).scalar_one()
        assert headers["traceparent"] == f"00-{trace_id:032x}-{span_id:016x}-01"
    finally:
        await empty_outbox(relay_db)
