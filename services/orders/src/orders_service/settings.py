from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from order_common.bus import BusSettings
from order_common.ratelimit import parse_limit
from order_common.settings import ApiSettings


class Settings(ApiSettings, BusSettings):
    """The API (`orders-service serve`) and the events process (`orders-service events`: the
    outbox relay and applying order_processed) read the same ORDERS_* environment; the bus
    fields (ORDERS_AMQP_URL, ORDERS_BUS_*) matter to the events process only: the API never
    touches RabbitMQ."""

    model_config = SettingsConfigDict(env_prefix="ORDERS_")

    service_name: str = "orders"
    database_url: SecretStr = SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/orders")
    redis_key_prefix: str = "orders"

    jwks_url: str = Field(
        default="http://127.0.0.1:8001/.well-known/jwks.json",
        description="where the auth service publishes the keys that verify tokens",
    )
    jwks_timeout_seconds: float = Field(default=5.0, gt=0, description="timeout of a JWKS fetch")
    jwks_max_age_seconds: float = Field(
        default=300,
        gt=0,
        description="cached signing keys are fetched again after this long (an unknown key id "
        "fetches them at once), so a key auth no longer publishes stops verifying",
    )

    token_cache_size: int = Field(
        default=4096,
        ge=0,
        description="verified tokens remembered per process, so a repeated token skips the "
        "RS256 check: an entry never outlives its token's `exp` and all are dropped when "
        "the signing keys change; 0 turns it off",
    )

    fast_get: bool = Field(
        default=True,
        description="answer a cached `GET /orders/{id}/` with a remembered token without the "
        "framework (the same bytes and headers, one Redis round trip); false sends every "
        "request through the routes",
    )

    cache_ttl_seconds: int = Field(
        default=300, ge=1, description="lifetime of an order's Redis cache entry"
    )
    rate_limit_orders: str = Field(
        default="300/minute",
        description="order requests per user, all order routes together (`limits` notation): "
        "a burst of that many, then refilled evenly (GCRA in Redis, shared by replicas)",
    )

    list_default_limit: int = Field(
        default=50, ge=1, description="orders per page when `?limit=` is not given"
    )
    list_max_limit: int = Field(default=200, ge=1, description="the largest `?limit=` accepted")

    relay_poll_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        description="relay: how often it looks for unpublished outbox events when no "
        "PostgreSQL NOTIFY woke it (the fallback; NOTIFY normally wakes it at once)",
    )
    relay_batch_size: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="relay: outbox events claimed (FOR UPDATE SKIP LOCKED) and published "
        "per transaction",
    )
    relay_max_attempts: int = Field(
        default=10,
        ge=1,
        description="relay: an outbox event that fails this many times on its own content (a "
        "payload that is not a valid envelope, headers that cannot be encoded) is "
        "dead-lettered (`orders-service dlq`); failures a broker outage caused are not counted",
    )
    order_processed_batch_size: int = Field(
        default=64,
        ge=1,
        le=1_000,
        description="events: `order_processed` reports in hand at once (the queue's prefetch), "
        "applied in one transaction and acked together",
    )
    outbox_retention_hours: float = Field(
        default=24.0,
        gt=0,
        description="relay: published outbox events are deleted after this many hours",
    )
    outbox_cleanup_interval_seconds: float = Field(
        default=600.0,
        gt=0,
        description="relay: how often it deletes the published outbox events past retention "
        "(and the expired idempotency keys)",
    )
    # Celery's Redis broker can drop a task in flight (popped by a worker that died, or cut
    # off with its connection, before the worker recorded it as unacked): nothing downstream
    # would ever ask again. The relay announces such orders once more (a new `new_order`
    # event id; the worker's per-order record keeps the processing step to one run).
    reannounce_after_seconds: float = Field(
        default=300.0,
        gt=0,
        description="relay: an order still unprocessed this long after its `new_order` was "
        "published is announced again",
    )
    reannounce_interval_seconds: float = Field(
        default=30.0,
        gt=0,
        description="relay: how often it looks for orders to announce again",
    )
    idempotency_key_ttl_seconds: int = Field(
        default=86_400,
        ge=1,
        description="how long an `Idempotency-Key` of `POST /orders/` is remembered (24 h); "
        "the relay deletes expired keys",
    )
    events_metrics_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        description="events process (`orders-service events`): port of its Prometheus metrics "
        "(`/metrics`; the API serves its own on the HTTP port); 0 turns it off",
    )
    events_metrics_host: str = Field(
        default="127.0.0.1",
        description="events process: address the metrics port listens on (`0.0.0.0` in a "
        "container)",
    )

    @field_validator("rate_limit_orders")
    @classmethod
    def _limit_parses(cls, value: str) -> str:
        # A typo must stop the start-up, not surface as an error on the first request.
        try:
            parse_limit(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit ({exc}); e.g. '300/minute'") from exc
        return value

    @model_validator(mode="after")
    def _default_within_max(self) -> Settings:
        if self.list_default_limit > self.list_max_limit:
            raise ValueError("list_default_limit cannot exceed list_max_limit")
        return self
