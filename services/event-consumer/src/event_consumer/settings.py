from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from order_common.bus import BusSettings
from order_common.settings import MetricsPortSettings, RedisSettings, ServiceSettings
from order_common.tasks import CelerySettings


class Settings(ServiceSettings, RedisSettings, BusSettings, CelerySettings, MetricsPortSettings):
    model_config = SettingsConfigDict(env_prefix="CONSUMER_")

    service_name: str = "event-consumer"
    redis_key_prefix: str = "consumer"

    prefetch: int = Field(default=16, ge=1, description="unacked events in flight at once")
    task_batch_size: int = Field(
        default=32,
        ge=1,
        le=256,
        description="orders per Celery task (`process_orders`); 1 sends one `process_order` "
        "task per order",
    )
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
