"""Processing a batch of orders (one ``process_orders`` task), each once in effect, with the
round trips shared: one ``MGET`` of the outcome records, one pipeline recording the new
outcomes (``SET NX`` each), one publish of every report with the confirms awaited together,
one pipeline flagging the confirmed reports.

Per order this is ``order_worker.processing.process_order`` step for step, with the same
records: an order already reported is skipped, one recorded but not reported is reported
again under its recorded event id without being processed again, one never recorded is
processed, recorded, then reported. So a batch run again -- its worker killed mid-task, a
transient failure retried, the task handed to another worker -- processes nothing twice and
reports what was missing. A report that fails leaves its order recorded and unreported, the
others of the batch are flagged, and the task raises for Celery to retry (with back-off): the
retry only reports what is still unreported.

The processing steps of a batch's new orders run side by side (threads): a step is the
order's own work, independent of the others', and a batch of N must not take N steps' time
against the task's time limit."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import Span, use_span
from redis import Redis

from order_common.events import Envelope, EventType, OrderProcessed, envelope
from order_common.tasks import PROCESS_ORDER_TASK, BatchedOrder, ProcessOrders
from order_common.telemetry import SpanKind, error_status, extract_context, tracer
from order_worker.processing import TRANSIENT_ERRORS, Outcome, marker_key

logger = logging.getLogger(__name__)

PublishMany = Callable[[Sequence[tuple[Envelope[Any], Span | None]]], list[BaseException | None]]


def process_orders(
    batch: ProcessOrders,
    *,
    redis: Redis,
    publish_many: PublishMany,
    key_prefix: str,
    delay_seconds: float,
    marker_ttl_seconds: int,
) -> dict[str, int]:
    """Process each order of ``batch`` once and report it; how many were ``processed``,
    ``reported`` (only the report was missing) and ``skipped`` (already reported). If a report
    fails on a transient error, the first such error is raised once every other order is
    recorded and the confirmed reports flagged."""
    orders = _distinct(batch.orders)
    keys = [marker_key(key_prefix, order.order_id) for order in orders]
    # The span each order's work is part of: the order's own trace, as for the one-order task.
    spans = [
        tracer().start_span(
            f"run/{PROCESS_ORDER_TASK}",
            context=extract_context(order.trace),
            kind=SpanKind.CONSUMER,
            attributes={"order.id": str(order.order_id)},
        )
        for order in orders
    ]
    try:
        return _process(orders, keys, spans, redis, publish_many, delay_seconds, marker_ttl_seconds)
    except BaseException as exc:
        for span in spans:
            span.set_status(error_status(exc))
        raise
    finally:
        for span in spans:
            span.end()


def _process(
    orders: list[BatchedOrder],
    keys: list[str],
    spans: list[Span],
    redis: Redis,
    publish_many: PublishMany,
    delay_seconds: float,
    marker_ttl_seconds: int,
) -> dict[str, int]:
    outcomes: list[Outcome | None] = [Outcome.load(raw) for raw in redis.mget(keys)]
    counts = {"processed": 0, "reported": 0, "skipped": 0}
    for index, outcome in enumerate(outcomes):
        if outcome is not None and outcome.reported:
            _log(spans[index], "order %s already processed; skipping", orders[index])
    new = [index for index, outcome in enumerate(outcomes) if outcome is None]
    for index in new:
        _log(spans[index], "processing order %s", orders[index])
    _run_steps(len(new), delay_seconds)
    if new:
        fresh = {i: Outcome(processed_at=datetime.now(UTC), report_id=uuid.uuid4()) for i in new}
        with redis.pipeline(transaction=False) as pipe:
            for index, outcome in fresh.items():
                pipe.set(keys[index], outcome.dump(), nx=True, ex=marker_ttl_seconds)
            recorded = pipe.execute()
        # Another worker recorded some first (a task handed over while still running): report
        # theirs, so each order has one outcome and one report id.
        lost = [index for index, ok in zip(fresh, recorded, strict=True) if not ok]
        theirs = dict(zip(lost, redis.mget([keys[i] for i in lost]), strict=True)) if lost else {}
        for index, outcome in fresh.items():
            outcomes[index] = Outcome.load(theirs.get(index)) or outcome
            _log(spans[index], "Order %s processed", orders[index])
        counts["processed"] = len(new)

    unreported = [i for i, outcome in enumerate(outcomes) if outcome and not outcome.reported]
    counts["reported"] = len(set(unreported) - set(new))
    counts["skipped"] = len(orders) - len(new) - counts["reported"]
    if not unreported:
        return counts

    reports = []
    for index in unreported:
        outcome = outcomes[index]
        assert outcome is not None
        report = envelope(
            EventType.ORDER_PROCESSED,
            OrderProcessed(order_id=orders[index].order_id, processed_at=outcome.processed_at),
        ).model_copy(update={"event_id": outcome.report_id})
        reports.append((report, spans[index]))
    failures = publish_many(reports)

    with redis.pipeline(transaction=False) as pipe:
        for index, failure in zip(unreported, failures, strict=True):
            outcome = outcomes[index]
            if failure is None and outcome is not None:
                done = Outcome(outcome.processed_at, outcome.report_id, reported=True)
                pipe.set(keys[index], done.dump(), ex=marker_ttl_seconds)
        pipe.execute()

    failed = [(index, f) for index, f in zip(unreported, failures, strict=True) if f is not None]
    for index, failure in failed:
        outcome = outcomes[index]
        assert outcome is not None
        with use_span(spans[index]):
            logger.warning(
                "order %s processed; reporting it failed, the report will be retried: %s",
                orders[index].order_id,
                f"{type(failure).__name__}: {failure}",
                extra={**_extra(orders[index]), "report_id": str(outcome.report_id)},
            )
        spans[index].record_exception(failure)
    if failed:
        transient = [f for _, f in failed if isinstance(f, TRANSIENT_ERRORS)]
        raise transient[0] if transient else failed[0][1]
    return counts


def _distinct(orders: Sequence[BatchedOrder]) -> list[BatchedOrder]:
    """The batch's orders, each once (the first copy of an order sent twice)."""
    seen: dict[uuid.UUID, BatchedOrder] = {}
    for order in orders:
        seen.setdefault(order.order_id, order)
    return list(seen.values())


def _run_steps(count: int, delay_seconds: float) -> None:
    """The processing step of ``count`` orders, side by side."""
    if count == 0 or delay_seconds <= 0:
        return
    if count == 1:
        time.sleep(delay_seconds)
        return
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="order-step") as pool:
        list(pool.map(lambda _: time.sleep(delay_seconds), range(count)))


def _log(span: Span, message: str, order: BatchedOrder) -> None:
    """An INFO line about ``order``, in its own trace (as the one-order task's lines are)."""
    with use_span(span):
        logger.info(message, order.order_id, extra=_extra(order))


def _extra(order: BatchedOrder) -> dict[str, str]:
    return {"order_id": str(order.order_id), "event_id": str(order.event_id)}
