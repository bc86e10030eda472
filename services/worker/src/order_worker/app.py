"""The Celery app of the worker, built from settings at worker start (never at import time).

Redis is Celery's broker; RabbitMQ stays the event bus only. A task is acknowledged after it
ran (``task_acks_late``) and handed back if its worker process dies mid-task
(``task_reject_on_worker_lost``); if the whole worker dies, Redis gives the task to another
worker once ``visibility_timeout`` has passed -- bounded by the task time limit, so seconds,
not Celery's default hour. Each worker process takes one task at a time."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

from order_worker.resources import WorkerResources, open_resources
from order_worker.settings import Settings
from order_worker.tasks import register_tasks


class OrderWorkerApp(Celery):  # type: ignore[misc]  # Celery ships no type hints
    def __init__(self, settings: Settings) -> None:
        super().__init__(
            "order-worker",
            broker=settings.celery_broker_url.get_secret_value(),
            set_as_current=False,
        )
        self.settings = settings
        self._resources: WorkerResources | None = None
        self._resources_pid: int | None = None

    def resources(self) -> WorkerResources:
        """Built on first use in each process: a prefork child never inherits its parent's
        sockets."""
        if self._resources is None or self._resources_pid != os.getpid():
            self._resources = open_resources(self.settings)
            self._resources_pid = os.getpid()
        return self._resources


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    options: dict[str, Any] = {
        **settings.celery_transport_options(),
        "visibility_timeout": settings.effective_visibility_timeout,
        # Look for abandoned tasks every `restore_interval_seconds` (kombu's default scans
        # only every 10th interval).
        "unacked_restore_interval": settings.restore_interval_seconds,
        "unacked_restore_throttle": 1,
    }
    return options


def create_celery(settings: Settings) -> OrderWorkerApp:
    app = OrderWorkerApp(settings)
    app.conf.update(
        broker_transport_options=broker_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=settings.task_time_limit_seconds,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_default_queue=settings.celery_queue,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        enable_utc=True,
    )
    register_tasks(app, settings, app.resources)
    return app
