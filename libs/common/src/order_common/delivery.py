"""What a bus handler is given and returns: the contract between ``order_common.subscriber``
and the services' handlers (``event_consumer.consumer``, ``orders_service.order_processed``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from opentelemetry.trace import Span

from order_common.events import Envelope


@dataclass(frozen=True)
class Delivery:
    """What a handler gets: the validated envelope and the message's context."""

    envelope: Envelope[Any]
    attempt: int  # 1 on the first run of the handler for this message
    headers: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False  # the broker delivered it before without an ack (a crash)
    # Its ``{event_type} process`` span: a batch handler runs in the first delivery's span
    # and makes each delivery's own work a child of this one (one trace per order).
    span: Span | None = None


class Handled(StrEnum):
    """What a handler may return (``None`` means ``OK``); counted on the metrics."""

    OK = "ok"
    DUPLICATE = "duplicate"  # seen before: nothing was done


Handler = Callable[[Delivery], Awaitable[Handled | None]]
# What became of one delivery: the handler's return value, or the exception it met.
Outcome = Handled | BaseException | None
# Handles many deliveries at once (e.g. one UPDATE for all); one outcome per delivery, in order.
BatchHandler = Callable[[Sequence[Delivery]], Awaitable[Sequence[Outcome]]]
