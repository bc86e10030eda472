from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from order_common.bus import BusSettings
from order_common.settings import ServiceSettings


class Settings(ServiceSettings, BusSettings):
    model_config = SettingsConfigDict(env_prefix="CONSUMER_")

    service_name: str = "event-consumer"
    redis_key_prefix: str = "consumer"

    # Celery is used only to send: the broker (Redis) and queue the worker listens on.
    celery_broker_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/1"),
        description="Celery's broker (Redis; RabbitMQ stays the event bus)",
    )
    celery_queue: str = Field(default="orders", description="the Celery queue the worker serves")
    celery_key_prefix: str = Field(
        default="", description="kombu `global_keyprefix` of every broker key; equal the worker's"
    )

    prefetch: int = Field(default=16, ge=1, description="unacked events in flight at once")
    dedup_ttl_seconds: int = Field(
        default=86_400,
        ge=1,
        description="how long an event id is remembered: longer than any redelivery or replay",
    )
    # A duplicate that finds a live claim is retried later; a crash leaves the claim to expire,
    # so the event is sent again rather than lost. Keep it below the sum of the back-off delays.
    dedup_claim_ttl_seconds: int = Field(
        default=10, ge=1, description="how long a claim on an event id holds while its task is sent"
    )
    shutdown_grace_seconds: float = Field(
        default=30.0, gt=0, description="on SIGTERM, how long in-flight events may take to finish"
    )
    metrics_port: int = Field(
        default=9102, ge=0, le=65535, description="port of its Prometheus metrics; 0 turns it off"
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address the metrics port listens on (`0.0.0.0` in a container)",
    )
