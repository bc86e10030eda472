from __future__ import annotations

from pydantic import Field, model_validator
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
        "task per order. Upgrading from a release without batches: upgrade the workers first "
        "(or run with 1 until they are), since an older worker drops a `process_orders` task "
        "and its orders wait for `ORDERS_REANNOUNCE_AFTER_SECONDS`",
    )
    dedup_ttl_seconds: int = Field(
        default=86_400,
        ge=1,
        description="how long an event id is remembered: longer than any redelivery or replay",
    )
    # A duplicate that finds a live claim is retried later; a crash leaves the claim to expire,
    # so the event is sent again rather than lost. Keep it below the sum of the back-off delays.
    # While a send is on its way the claim is renewed every third of it (a slow broker never
    # lets it lapse under a send), so it only has to outlive one renewal.
    dedup_claim_ttl_seconds: int = Field(
        default=10,
        ge=1,
        description="how long a claim on an event id holds unless renewed: it is renewed "
        "every third of it while its task is being sent, and expires this long after a crash",
    )
    celery_send_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="longest wait for Celery's broker (Redis), per connect and per command of "
        "a task send: a send that meets it fails and its event is retried",
    )
    shutdown_grace_seconds: float = Field(
        default=30.0, gt=0, description="on SIGTERM, how long in-flight events may take to finish"
    )
    metrics_port: int = Field(
        default=9102, ge=0, le=65535, description="port of its Prometheus metrics; 0 turns it off"
    )

    @model_validator(mode="after")
    def _claim_outlives_its_renewal(self) -> Settings:
        # A renewal is sent a third of the TTL after the last and may take a Redis timeout:
        # it must land while the claim still holds, or a copy could send the task a second time.
        renewal = self.dedup_claim_ttl_seconds / 3 + self.redis_timeout_seconds
        if renewal >= self.dedup_claim_ttl_seconds:
            raise ValueError(
                f"dedup_claim_ttl_seconds ({self.dedup_claim_ttl_seconds}) must exceed a third "
                f"of itself plus redis_timeout_seconds ({self.redis_timeout_seconds}): the "
                "renewal of a claim must land before the claim expires"
            )
        return self
