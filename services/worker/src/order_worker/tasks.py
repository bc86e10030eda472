"""`process_order`: the order's processing, then its report, `order_processed`, on the bus.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import amqp.exceptions
import kombu.exceptions
import redis.exceptions
from celery import Task

from order_common.events import EventType, OrderProcessed, envelope
from order_common.tasks import PROCESS_ORDER_TASK, ProcessOrder
from order_worker import deadletters

if TYPE_CHECKING:
    from order_worker.app import OrderWorkerApp

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


def marker_key(app: OrderWorkerApp, order_id: object) -> str:
    return f"{app.settings.redis_key_prefix}:processed:{order_id}"


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


def process_order(task: Any, order_id: str, event_id: str) -> str:
    app: OrderWorkerApp = task.app
    settings = app.settings
    resources = app.resources()
    request = ProcessOrder.model_validate({"order_id": order_id, "event_id": event_id})
    extra = {"order_id": str(request.order_id), "event_id": str(request.event_id)}
    redis = resources.redis
    key = marker_key(app, request.order_id)

    outcome = Outcome.load(redis.get(key))
    if outcome is not None and outcome.reported:
        logger.info("order %s already processed; skipping", request.order_id, extra=extra)
        return "skipped"
    result = "reported"  # only the report was missing
    if outcome is None:
        logger.info("processing order %s", request.order_id, extra=extra)
        if settings.processing_delay_seconds > 0:
            time.sleep(settings.processing_delay_seconds)
        outcome = Outcome(processed_at=datetime.now(UTC), report_id=uuid.uuid4())
        if not redis.set(key, outcome.dump(), nx=True, ex=settings.idempotency_ttl_seconds):
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
        resources.publish(report)
    except TRANSIENT_ERRORS as exc:
        logger.warning(
            "order %s processed; reporting it failed, the report will be retried: %s",
            request.order_id,
            f"{type(exc).__name__}: {exc}",
            extra={**extra, "report_id": str(outcome.report_id)},
        )
        raise
    reported = Outcome(outcome.processed_at, outcome.report_id, reported=True)
    redis.set(key, reported.dump(), ex=settings.idempotency_ttl_seconds)
    return result


class DeadLetteringTask(Task):  # type: ignore[misc]  # Celery ships no type hints
    """A task that fails for good -- retries exhausted, time limit, bad arguments, a bug -- is
    parked in the dead-letter list with its reason (``order_worker.deadletters``)."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        app: OrderWorkerApp = self.app
        try:
            deadletters.park(
                app.resources().broker_redis,
                app.settings,
                task=self.name,
                task_id=task_id,
                kwargs=dict(kwargs or {}),
                reason=deadletters.reason_of(exc, TRANSIENT_ERRORS),
                error=f"{type(exc).__name__}: {exc}",
                retries=getattr(self.request, "retries", None),
            )
        except Exception:
            logger.exception(
                "task %s failed and could not be dead-lettered", task_id, extra={"kwargs": kwargs}
            )


def register_tasks(app: OrderWorkerApp) -> None:
    settings = app.settings
    app.task(
        name=PROCESS_ORDER_TASK,
        base=DeadLetteringTask,
        bind=True,
        autoretry_for=TRANSIENT_ERRORS,
        retry_backoff=True,
        retry_backoff_max=settings.task_retry_backoff_max_seconds,
        retry_jitter=True,
        max_retries=settings.task_max_retries,
    )(process_order)
