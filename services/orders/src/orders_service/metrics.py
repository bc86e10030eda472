"""Prometheus metrics of the orders service, exposed on /metrics."""

from __future__ import annotations

from prometheus_client import Counter

CACHE_OPERATIONS = Counter(
    "orders_cache_operations_total",
    "Order cache operations by outcome. result=error: Redis failed and PostgreSQL answered.",
    ["op", "result"],
)
ORDERS_CREATED = Counter("orders_created_total", "Orders created.")
STATUS_CHANGES = Counter(
    "orders_status_changes_total", "Order status changes.", ["from_status", "to_status"]
)
