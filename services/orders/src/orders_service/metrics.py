"""Prometheus metrics of the orders service. The API exposes them on /metrics (with the shared
HTTP, pool and rate-limit metrics of ``order_common.metrics``); the events process, which
publishes the outbox and applies ``order_processed``, on its metrics port
(ORDERS_EVENTS_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from order_common.events import EventType
from order_common.metrics import RATE_LIMIT_REJECTIONS
from order_common.orders import ALLOWED_TRANSITIONS

# --- the API --------------------------------------------------------------------------------

CACHE_OPERATIONS = Counter(
    "orders_cache_operations_total",
    "Order cache operations by outcome. get: hit, miss, invalid; put: ok, stale (a newer "
    "entry was kept); result=error: Redis failed and PostgreSQL answered.",
    ["op", "result"],
)
ORDERS_CREATED = Counter("orders_created_total", "Orders created.")
ORDERS_REANNOUNCED = Counter(
    "orders_reannounced_total",
    "Orders announced again (new_order) because they were still unprocessed long after.",
)
IDEMPOTENT_REPLAYS = Counter(
    "orders_idempotent_replays_total",
    "POST /orders/ requests answered with the order their Idempotency-Key already created.",
)
STATUS_CHANGES = Counter(
    "orders_status_changes_total", "Order status changes.", ["from_status", "to_status"]
)

# --- the relay ------------------------------------------------------------------------------

OUTBOX_BACKLOG = Gauge(
    "orders_outbox_backlog",
    "Outbox events not yet published, as the relay last counted them.",
    # Only the relay sets it; in the API's multiprocess mode the workers' zeros add no pid label.
    multiprocess_mode="livemax",
)
OUTBOX_OLDEST_AGE = Gauge(
    "orders_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox event (0 when there is none), as the relay last "
    "measured it.",
    multiprocess_mode="livemax",
)
EVENTS_PUBLISHED = Counter(
    "orders_events_published_total",
    "Outbox events published to RabbitMQ (confirmed by the broker).",
    ["event_type"],
)
PUBLISH_FAILURES = Counter(
    "orders_events_publish_failures_total",
    "Outbox publishes the broker did not confirm; the event stays in the outbox and is "
    "published again later.",
    ["event_type"],
)
OUTBOX_DEAD_LETTERED = Counter(
    "orders_outbox_dead_lettered_total",
    "Outbox events set aside after failing ORDERS_RELAY_MAX_ATTEMPTS times on their own "
    "content (orders-service dlq shows them).",
    ["event_type"],
)
OUTBOX_DEAD_LETTERS = Gauge(
    "orders_outbox_dead_letters",
    "Dead-lettered outbox events waiting for a re-drive, as the relay last counted them.",
    multiprocess_mode="livemax",
)
PROCESSING_LAG = Histogram(
    "orders_processing_lag_seconds",
    "From an order's creation to its processing by the worker (the first `order_processed` "
    "report); its _count is the number of orders processed.",
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300, 600, 1800),
)


def _initialise() -> None:
    """Create every known series at 0, so rates and ratios exist before the first event."""
    for op, results in (
        ("get", ("hit", "miss", "invalid", "error")),
        ("put", ("ok", "stale", "error")),
    ):
        for result in results:
            CACHE_OPERATIONS.labels(op=op, result=result)
    for event_type in EventType:
        EVENTS_PUBLISHED.labels(event_type=event_type.value)
        PUBLISH_FAILURES.labels(event_type=event_type.value)
        OUTBOX_DEAD_LETTERED.labels(event_type=event_type.value)
    for current, allowed in ALLOWED_TRANSITIONS.items():
        for status in allowed:
            STATUS_CHANGES.labels(from_status=current.value, to_status=status.value)
    RATE_LIMIT_REJECTIONS.labels("orders")


_initialise()
