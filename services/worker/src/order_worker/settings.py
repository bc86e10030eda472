from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from order_common.bus import BusSettings
from order_common.settings import MetricsPortSettings, RedisSettings, ServiceSettings
from order_common.tasks import CelerySettings


class Settings(ServiceSettings, RedisSettings, BusSettings, CelerySettings, MetricsPortSettings):
    model_config = SettingsConfigDict(env_prefix="WORKER_")

    service_name: str = "worker"
    # The idempotency marker of each processed order lives under this prefix.
    redis_key_prefix: str = "worker"
    idempotency_ttl_seconds: int = Field(
        default=7 * 86_400, ge=1, description="how long a processed order's marker is kept"
    )

    concurrency: int = Field(default=2, ge=1, description="worker processes (prefork)")

    processing_delay_seconds: float = Field(
        default=2.0, ge=0, description="the processing step of an order (0 for benchmarks)"
    )
    # A task runs at most this long: Celery kills one that goes on (and it is dead-lettered).
    # That bound is what lets a dead worker's tasks come back soon: see below.
    task_time_limit_seconds: int = Field(
        default=30, ge=1, description="the longest a task may run; beyond it, killed and failed"
    )
    # A task that keeps failing on transient errors (broker, Redis) is retried with
    # exponential back-off this many times, then dead-lettered (order_worker.deadletters).
    task_max_retries: int = Field(
        default=20, ge=0, description="retries of a task failing on transient errors"
    )
    task_retry_backoff_max_seconds: int = Field(
        default=15, ge=1, description="the longest back-off between two retries"
    )
    # A task delivered and not acked this long is handed to another worker: its worker is
    # presumed dead. Redis counts from the delivery, and a retry waits for its countdown in
    # the worker that holds it, so it must exceed the longest back-off plus the longest run.
    visibility_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        description="unacked this long, a task goes to another worker (default: the time "
        "limit + the longest retry back-off + 15 s)",
    )
    restore_interval_seconds: int = Field(
        default=5, ge=1, description="how often a worker looks for abandoned tasks"
    )

    # The metrics of every prefork child, added up through PROMETHEUS_MULTIPROC_DIR (a fresh
    # temporary directory unless that variable names one; emptied at start either way).
    metrics_port: int = Field(
        default=9103, ge=0, le=65535, description="port of its Prometheus metrics; 0 turns it off"
    )

    @property
    def effective_visibility_timeout(self) -> int:
        if self.visibility_timeout_seconds is not None:
            return self.visibility_timeout_seconds
        return self.task_time_limit_seconds + self.task_retry_backoff_max_seconds + 15

    @model_validator(mode="after")
    def _bounds_fit(self) -> Settings:
        if self.task_time_limit_seconds <= self.processing_delay_seconds:
            raise ValueError(
                "task_time_limit_seconds must exceed processing_delay_seconds, or every task "
                "is killed before it is done"
            )
        if (
            self.effective_visibility_timeout
            <= self.task_time_limit_seconds + self.task_retry_backoff_max_seconds
        ):
            raise ValueError(
                "visibility_timeout_seconds must exceed task_time_limit_seconds + "
                "task_retry_backoff_max_seconds, or tasks still running or waiting for a "
                "retry are handed to a second worker"
            )
        return self
