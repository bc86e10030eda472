"""Prometheus metrics of the worker, served by the main process on WORKER_METRICS_PORT.

Tasks run in prefork children, so the metrics use prometheus_client's multiprocess mode: each
process writes its values under ``PROMETHEUS_MULTIPROC_DIR`` and the main process adds them up
when scraped. ``order_worker.cli`` sets that directory up before this module is imported (the
mode is chosen when prometheus_client is first imported)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

from celery import signals
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import Redis
from redis.exceptions import RedisError

from order_common.metrics import multiprocess_registry
from order_common.tasks import PROCESS_ORDER_TASK, PROCESS_ORDERS_TASK
from order_worker.settings import Settings

logger = logging.getLogger(__name__)

OUTCOMES = ("processed", "reported", "skipped", "retried", "failed")
TASKS = Counter(
    "worker_tasks_total",
    "Celery tasks run, by outcome: processed, reported (processed before, only its report "
    "was missing), skipped (processed and reported before), "
    "retried (a transient error; the task runs again after a back-off), failed (gave up).",
    ["task", "outcome"],
)
ORDERS = Counter(
    "worker_orders_total",
    "Orders handled, by outcome: processed, reported (only its report was missing), skipped "
    "(processed and reported before). A batch task counts each of its orders.",
    ["outcome"],
)
TASK_DURATION = Histogram(
    "worker_task_duration_seconds",
    "Run time of a task, the processing delay included, whatever its outcome.",
    ["task"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 2.5, 3, 5, 10, 30, 60, 300),
)
# Celery's Redis transport keeps one list per priority step: the queue's own name for the
# default priority, then "<queue>\x06\x16<n>".
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

_started: dict[str, float] = {}


class QueueLengthCollector(Collector):
    """Tasks waiting in the Celery queue (Redis lists), read when scraped: what autoscaling on
    queue depth looks at."""

    def __init__(self, settings: Settings) -> None:
        self._queue = settings.celery_queue
        self._key = f"{settings.celery_key_prefix}{settings.celery_queue}"
        self._redis = Redis.from_url(
            settings.celery_broker_url.get_secret_value(),
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
        )

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "celery_queue_length", "Tasks waiting in the Celery queue.", labels=["queue"]
        )
        try:
            length = sum(int(self._redis.llen(self._key + suffix)) for suffix in _PRIORITY_SUFFIXES)
        except RedisError as exc:
            logger.debug("celery queue length unavailable: %s", exc)
        else:
            family.add_metric([self._queue], length)
        yield family


def registry(settings: Settings) -> CollectorRegistry:
    """What the metrics port serves: every process's metrics and the queue length."""
    result = multiprocess_registry()
    result.register(QueueLengthCollector(settings))
    return result


def _on_prerun(task_id: str | None = None, **_: Any) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def _on_postrun(
    task_id: str | None = None,
    task: Any = None,
    retval: Any = None,
    state: str | None = None,
    **_: Any,
) -> None:
    name = getattr(task, "name", "unknown")
    started = _started.pop(task_id or "", None)
    if started is not None:
        TASK_DURATION.labels(name).observe(time.perf_counter() - started)
    if state == "SUCCESS" and isinstance(retval, dict):  # a batch: how many of each
        for outcome, count in retval.items():
            if outcome in OUTCOMES and count:
                ORDERS.labels(outcome).inc(count)
    elif state == "SUCCESS" and retval in OUTCOMES:
        ORDERS.labels(retval).inc()
    if state == "SUCCESS":
        outcome = retval if retval in OUTCOMES else "processed"
    elif state == "RETRY":
        outcome = "retried"
    else:
        outcome = "failed"
    TASKS.labels(name, outcome).inc()


def install() -> None:
    """Count and time every task (signals fire in the child that runs it)."""
    for task in (PROCESS_ORDER_TASK, PROCESS_ORDERS_TASK):
        for outcome in OUTCOMES:
            TASKS.labels(task, outcome)
        TASK_DURATION.labels(task)
    for outcome in ("processed", "reported", "skipped"):
        ORDERS.labels(outcome)
    signals.task_prerun.connect(_on_prerun, weak=False, dispatch_uid="order-worker-metrics")
    signals.task_postrun.connect(_on_postrun, weak=False, dispatch_uid="order-worker-metrics")
