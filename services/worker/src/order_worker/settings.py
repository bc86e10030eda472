from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from order_common.bus import BusSettings
from order_common.settings import ServiceSettings


class Settings(ServiceSettings, BusSettings):
    model_config = SettingsConfigDict(env_prefix="WORKER_")

    service_name: str = "worker"
    # The idempotency marker of each processed order lives under this prefix.
    redis_key_prefix: str = "worker"
    idempotency_ttl_seconds: int = Field(
        default=7 * 86_400, ge=1, description="how long a processed order's marker is kept"
    )

    # Celery's broker is Redis; RabbitMQ stays the event bus only.
    celery_broker_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/1"), description="Celery's broker (Redis)"
    )
    celery_queue: str = Field(default="orders", description="the Celery queue this worker serves")
    celery_key_prefix: str = Field(
        default="", description="kombu `global_keyprefix` of every broker key; equal the consumer's"
    )
    concurrency: int = Field(default=2, ge=1, description="worker processes (prefork)")

    processing_delay_seconds: float = Field(
        default=2.0, ge=0, description="the processing step of an order (0 for benchmarks)"
    )
    # A task not acked this long after delivery is handed to another worker (its worker is
    # presumed dead): it must exceed the longest task, retries' waits excluded.
    visibility_timeout_seconds: int = Field(
        default=3600, ge=1, description="unacked this long, a task goes to another worker"
    )
    restore_interval_seconds: int = Field(
        default=10, ge=1, description="how often a worker looks for abandoned tasks"
    )

    # A task that keeps failing on transient errors (broker, Redis) is retried with
    # exponential back-off this many times, then logged as failed.
    task_max_retries: int = Field(
        default=10, ge=0, description="retries of a task failing on transient errors"
    )
    task_retry_backoff_max_seconds: int = Field(
        default=300, ge=1, description="the longest back-off between two retries"
    )

    # The metrics of every prefork child, added up through PROMETHEUS_MULTIPROC_DIR (a fresh
    # temporary directory unless that variable names one; emptied at start either way).
    metrics_port: int = Field(
        default=9103, ge=0, le=65535, description="port of its Prometheus metrics; 0 turns it off"
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address the metrics port listens on (`0.0.0.0` in a container)",
    )

    @model_validator(mode="after")
    def _visibility_exceeds_processing(self) -> Settings:
        if self.visibility_timeout_seconds <= self.processing_delay_seconds:
            raise ValueError(
                "visibility_timeout_seconds must exceed processing_delay_seconds, or tasks "
                "still running are handed to a second worker"
            )
        return self
