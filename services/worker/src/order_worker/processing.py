"""Processing an order, then reporting it (`order_processed`) on the bus: plain code, given
what it needs; ``order_worker.tasks`` runs it as a Celery task.

The outcome is recorded before it is reported, so a failed report retries the report, not the
work. Per order, a Redis record (``{prefix}:processed:{order_id}``) holds the outcome: written
once the processing step is done (when, and the id of the `order_processed` event that
reports it), then flagged once the broker confirmed that event. A task that finds it

- absent: runs the processing step, records the outcome, reports it;
- recorded but not reported (the publish failed, or the worker died in between): reports the
  recorded outcome again under the same event id, without processing again;
- reported: does nothing (a redelivered event, a task handed to another worker).

A crash between the confirm and the flag reports twice under one event id; the orders service
applies `order_processed` idempotently."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import amqp.exceptions
import kombu.exceptions
import redis.exceptions
from redis import Redis

from order_common.events import Envelope, EventType, OrderProcessed, envelope
from order_common.tasks import ProcessOrder

logger = logging.getLogger(__name__)

# Worth retrying: the broker or Redis was unreachable or did not confirm.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    amqp.exceptions.ConnectionError,
    amqp.exceptions.ChannelError,
    amqp.exceptions.MessageNacked,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def marker_key(prefix: str, order_id: object) -> str:
    return f"{prefix}:processed:{order_id}"


@dataclass(frozen=True)
class Outcome:
    """What the processing step produced, and whether its report was confirmed."""

    processed_at: datetime
    report_id: uuid.UUID  # event id of the `order_processed` that reports it
    reported: bool = False

    def dump(self) -> str:
        return json.dumps(
            {
                "processed_at": self.processed_at.isoformat(),
                "report_id": str(self.report_id),
                "reported": self.reported,
            }
        )

    @classmethod
    def load(cls, raw: bytes | str | None) -> Outcome | None:
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            return cls(
                processed_at=datetime.fromisoformat(data["processed_at"]),
                report_id=uuid.UUID(data["report_id"]),
                reported=bool(data["reported"]),
            )
        except (ValueError, KeyError, TypeError):
            # A marker of an earlier version (the bare time): it was set after the report.
            return cls(processed_at=datetime.now(UTC), report_id=uuid.uuid4(), reported=True)


def process_order(
    request: ProcessOrder,
    *,
    redis: Redis,
    publish: Callable[[Envelope[Any]], None],
    key_prefix: str,
    delay_seconds: float,
    marker_ttl_seconds: int,
) -> str:
    """Process one order once and report it; returns ``processed``, ``reported`` (only the
    report was missing) or ``skipped`` (already reported). A transient error while reporting
    propagates, for the caller to retry: the outcome is kept, the work is not done again."""
    extra = {"order_id": str(request.order_id), "event_id": str(request.event_id)}
    key = marker_key(key_prefix, request.order_id)

    outcome = Outcome.load(redis.get(key))
    if outcome is not None and outcome.reported:
        logger.info("order %s already processed; skipping", request.order_id, extra=extra)
        return "skipped"
    result = "reported"  # only the report was missing
    if outcome is None:
        logger.info("processing order %s", request.order_id, extra=extra)
        if delay_seconds > 0:
            time.sleep(delay_seconds)
        outcome = Outcome(processed_at=datetime.now(UTC), report_id=uuid.uuid4())
        if not redis.set(key, outcome.dump(), nx=True, ex=marker_ttl_seconds):
            # Another worker recorded it first (a task handed over while still running):
            # report theirs, so the order has one outcome and one report id.
            outcome = Outcome.load(redis.get(key)) or outcome
        logger.info("Order %s processed", request.order_id, extra=extra)
        result = "processed"

    report = envelope(
        EventType.ORDER_PROCESSED,
        OrderProcessed(order_id=request.order_id, processed_at=outcome.processed_at),
    ).model_copy(update={"event_id": outcome.report_id})
    try:
        publish(report)
    except TRANSIENT_ERRORS as exc:
        logger.warning(
            "order %s processed; reporting it failed, the report will be retried: %s",
            request.order_id,
            f"{type(exc).__name__}: {exc}",
            extra={**extra, "report_id": str(outcome.report_id)},
        )
        raise
    reported = Outcome(outcome.processed_at, outcome.report_id, reported=True)
    redis.set(key, reported.dump(), ex=marker_ttl_seconds)
    return result
