from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from order_common.bus import BusSettings
from order_common.settings import ServiceSettings


class Settings(ServiceSettings, BusSettings):
    model_config = SettingsConfigDict(env_prefix="WORKER_")

    service_name: str = "worker"
    # The idempotency marker of each processed order lives under this prefix.
    redis_key_prefix: str = "worker"
    idempotency_ttl_seconds: int = Field(default=7 * 86_400, ge=1)

    # Celery's broker is Redis; RabbitMQ stays the event bus only.
    celery_broker_url: str = "redis://127.0.0.1:6379/1"
    celery_queue: str = "orders"
    # kombu's `global_keyprefix` for every broker key; must equal the consumer's.
    celery_key_prefix: str = ""
    concurrency: int = Field(default=2, ge=1)

    processing_delay_seconds: float = Field(default=2.0, ge=0)
    # A task not acked this long after delivery is handed to another worker (its worker is
    # presumed dead): it must exceed the longest task, retries' waits excluded.
    visibility_timeout_seconds: int = Field(default=3600, ge=1)
    # How often a worker looks for such abandoned tasks.
    restore_interval_seconds: int = Field(default=10, ge=1)

    # A task that keeps failing on transient errors (broker, Redis) is retried with
    # exponential back-off this many times, then logged as failed.
    task_max_retries: int = Field(default=10, ge=0)
    task_retry_backoff_max_seconds: int = Field(default=300, ge=1)

    @model_validator(mode="after")
    def _visibility_exceeds_processing(self) -> Settings:
        if self.visibility_timeout_seconds <= self.processing_delay_seconds:
            raise ValueError(
                "visibility_timeout_seconds must exceed processing_delay_seconds, or tasks "
                "still running are handed to a second worker"
            )
        return self
