"""The Celery side of the worker: the ``process_order`` task, a thin call of
``order_worker.processing`` that Celery retries on transient errors (with back-off) and that
is parked in the dead-letter list with its reason when it fails for good -- retries exhausted,
time limit, bad arguments, a bug (``order_worker.deadletters``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, Task

from order_common.tasks import PROCESS_ORDER_TASK, ProcessOrder
from order_worker import deadletters
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

    @app.task(  # type: ignore[untyped-decorator]
        name=PROCESS_ORDER_TASK,
        # This app's own: a shared task would be added to every Celery app made later in the
        # process, still bound to this app's settings and connections.
        shared=False,
        base=DeadLetteringTask,
        autoretry_for=TRANSIENT_ERRORS,
        retry_backoff=True,
        retry_backoff_max=settings.task_retry_backoff_max_seconds,
        retry_jitter=True,
        max_retries=settings.task_max_retries,
    )
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
