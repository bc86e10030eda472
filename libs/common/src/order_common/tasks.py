"""The Celery task contract between the event consumer and the worker. The consumer sends the
task by name with this payload and never imports the worker's code."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict

PROCESS_ORDER_TASK = "order_worker.process_order"


class ProcessOrder(BaseModel):
    """Keyword arguments of ``PROCESS_ORDER_TASK``: ``model_dump(mode="json")`` to send."""

    model_config = ConfigDict(extra="forbid")

    order_id: uuid.UUID
    event_id: uuid.UUID  # the `new_order` event that asked for it, for tracing and logs
