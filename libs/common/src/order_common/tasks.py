"""The Celery task contract between the event consumer and the worker. The consumer sends the
task by name with this payload and never imports the worker's code."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings

from order_common.settings import SETTINGS_CONFIG

PROCESS_ORDER_TASK = "order_worker.process_order"


class CelerySettings(BaseSettings):
    """Where the consumer sends tasks and the worker takes them: both mix this in, under their
    own env prefix (``CONSUMER_CELERY_QUEUE``, ``WORKER_CELERY_QUEUE``), and must agree."""

    model_config = SETTINGS_CONFIG

    # Celery's broker is Redis; RabbitMQ stays the event bus only.
    celery_broker_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/1"), description="Celery's broker (Redis)"
    )
    celery_queue: str = Field(default="orders", description="the Celery queue of the orders")
    celery_key_prefix: str = Field(
        default="",
        description="kombu `global_keyprefix` of every broker key (the same in consumer and "
        "worker)",
    )

    def celery_transport_options(self) -> dict[str, Any]:
        """The broker transport options both sides need to find the same keys."""
        return {"global_keyprefix": self.celery_key_prefix} if self.celery_key_prefix else {}


class ProcessOrder(BaseModel):
    """Keyword arguments of ``PROCESS_ORDER_TASK``: ``model_dump(mode="json")`` to send."""

    model_config = ConfigDict(extra="forbid")

    order_id: uuid.UUID
    event_id: uuid.UUID  # the `new_order` event that asked for it, for tracing and logs


PROCESS_ORDERS_TASK = "order_worker.process_orders"


class BatchedOrder(ProcessOrder):
    """One order of a ``PROCESS_ORDERS_TASK``, with the W3C headers of its own trace: a batch
    crosses many traces, so each order carries the context its spans continue."""

    trace: dict[str, str] = Field(default_factory=dict)


class ProcessOrders(BaseModel):
    """Keyword arguments of ``PROCESS_ORDERS_TASK``: many orders in one Celery task, so that
    the task's own cost (the broker's round trips, the ack, the bookkeeping of a late ack) and
    the worker's round trips to Redis and RabbitMQ are paid once per batch, not per order. Each
    order is still processed once in effect (``order_worker.batches``)."""

    model_config = ConfigDict(extra="forbid")

    orders: list[BatchedOrder] = Field(min_length=1)
