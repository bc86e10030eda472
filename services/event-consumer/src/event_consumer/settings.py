from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from order_common.bus import BusSettings
from order_common.settings import ServiceSettings


class Settings(ServiceSettings, BusSettings):
    model_config = SettingsConfigDict(env_prefix="CONSUMER_")

    service_name: str = "event-consumer"
    redis_key_prefix: str = "consumer"

    # Celery is used only to send: the broker (Redis) and queue the worker listens on. The
    # key prefix is kombu's `global_keyprefix`; it must equal the worker's.
    celery_broker_url: str = "redis://127.0.0.1:6379/1"
    celery_queue: str = "orders"
    celery_key_prefix: str = ""

    prefetch: int = Field(default=16, ge=1)
    # How long an event id is remembered: longer than any redelivery or outbox replay.
    dedup_ttl_seconds: int = Field(default=86_400, ge=1)
    # How long a claim on an event id holds while its task is being sent. A duplicate that
    # finds a live claim is retried later; a crash leaves the claim to expire, so the event
    # is sent again rather than lost. Keep it below the sum of the bus back-off delays.
    dedup_claim_ttl_seconds: int = Field(default=10, ge=1)
    shutdown_grace_seconds: float = Field(default=30.0, gt=0)
