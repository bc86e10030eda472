"""The Celery side of the worker: the ``process_order`` task (one order), a thin call of
``order_worker.processing``, and the ``process_orders`` task (a batch, what the event consumer
sends), a thin call of ``order_worker.batches``. Celery retries either on transient errors
(with back-off), and parks it in the dead-letter list with its reason when it fails for good --
retries exhausted, time limit, bad arguments, a bug (``order_worker.deadletters``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, Task

from order_common.tasks import PROCESS_ORDER_TASK, PROCESS_ORDERS_TASK, ProcessOrder, ProcessOrders
from order_worker import deadletters
from order_worker.batches import process_orders
from order_worker.processing import TRANSIENT_ERRORS, process_order
from order_worker.resources import WorkerResources
from order_worker.settings import Settings

logger = logging.getLogger(__name__)


def register_tasks(
    app: Celery, settings: Settings, resources: Callable[[], WorkerResources]
) -> None:
    """Register the worker's tasks on ``app``; ``resources`` gives this process's connections."""

    class DeadLetteringTask(Task):  # type: ignore[misc]  # Celery ships no type hints
        def on_failure(
            self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
        ) -> None:
            try:
                deadletters.park(
                    resources().broker_redis,
                    settings,
                    task=self.name,
                    task_id=task_id,
                    kwargs=dict(kwargs or {}),
                    reason=deadletters.reason_of(exc, TRANSIENT_ERRORS),
                    error=f"{type(exc).__name__}: {exc}",
                    retries=getattr(self.request, "retries", None),
                )
            except Exception:
                logger.exception(
                    "task %s failed and could not be dead-lettered",
                    task_id,
                    extra={"kwargs": kwargs},
                )

    options: dict[str, Any] = {
        # This app's own: a shared task would be added to every Celery app made later in the
        # process, still bound to this app's settings and connections.
        "shared": False,
        "base": DeadLetteringTask,
        "autoretry_for": TRANSIENT_ERRORS,
        "retry_backoff": True,
        "retry_backoff_max": settings.task_retry_backoff_max_seconds,
        "retry_jitter": True,
        "max_retries": settings.task_max_retries,
    }

    @app.task(name=PROCESS_ORDER_TASK, **options)  # type: ignore[untyped-decorator]
    def process_order_task(order_id: str, event_id: str) -> str:
        connections = resources()
        return process_order(
            ProcessOrder.model_validate({"order_id": order_id, "event_id": event_id}),
            redis=connections.redis,
            publish=connections.publish,
            key_prefix=settings.redis_key_prefix,
            delay_seconds=settings.processing_delay_seconds,
            marker_ttl_seconds=settings.idempotency_ttl_seconds,
        )

    @app.task(name=PROCESS_ORDERS_TASK, **options)  # type: ignore[untyped-decorator]
    def process_orders_task(orders: list[dict[str, Any]]) -> dict[str, int]:
        connections = resources()
        return process_orders(
            ProcessOrders.model_validate({"orders": orders}),
            redis=connections.redis,
            publish_many=connections.publisher.publish_many,
            key_prefix=settings.redis_key_prefix,
            delay_seconds=settings.processing_delay_seconds,
            marker_ttl_seconds=settings.idempotency_ttl_seconds,
        )
