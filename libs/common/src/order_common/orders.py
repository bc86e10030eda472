"""The public order schemas and the order status state machine."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from order_common.money import MAX_AMOUNT, Money
from order_common.text import StorableText

MAX_ITEMS = 100


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    SHIPPED = "SHIPPED"
    CANCELED = "CANCELED"


ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PAID, OrderStatus.CANCELED}),
    OrderStatus.PAID: frozenset({OrderStatus.SHIPPED, OrderStatus.CANCELED}),
    OrderStatus.SHIPPED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, current: OrderStatus, requested: OrderStatus) -> None:
        self.current = current
        self.requested = requested
        allowed = sorted(ALLOWED_TRANSITIONS[current])
        moves = ", ".join(allowed) if allowed else "none (it is final)"
        super().__init__(
            f"cannot change status from {current} to {requested}; allowed from {current}: {moves}"
        )


def transition(current: OrderStatus, requested: OrderStatus) -> bool:
    """Return True when the status changes, False for the no-op of setting it again.

    Raises IllegalTransition for a move the state machine does not allow."""
    if current == requested:
        return False
    if requested not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(current, requested)
    return True


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: StorableText = Field(min_length=1, max_length=200, examples=["Laptop"])
    quantity: int = Field(ge=1, le=10_000, examples=[1])
    price: Money


# The README's order: the example every document shows.
ORDER_CREATE_EXAMPLE: dict[str, Any] = {
    "items": [
        {"name": "Laptop", "quantity": 1, "price": "400.00"},
        {"name": "Mouse", "quantity": 2, "price": "25.50"},
    ],
    "total_price": "451.00",
}


class OrderCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [ORDER_CREATE_EXAMPLE]}
    )

    items: list[OrderItem] = Field(min_length=1, max_length=MAX_ITEMS)
    total_price: Money = Field(
        description="Exactly the sum of quantity x price of the items, as a decimal string "
        'with at most two places ("451.00"); anything else is 422.'
    )

    @model_validator(mode="after")
    def _total_matches_items(self) -> OrderCreate:
        expected = sum((item.price * item.quantity for item in self.items), Decimal("0.00"))
        if expected > MAX_AMOUNT:
            raise ValueError(f"total_price: the items add up to {expected}, over {MAX_AMOUNT}")
        if expected != self.total_price:
            raise ValueError(
                f"total_price: {self.total_price} does not equal the sum of quantity x price "
                f"of the items ({expected:.2f})"
            )
        return self


class OrderStatusUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"status": "PAID"}]})

    status: OrderStatus = Field(description="PENDING → PAID → SHIPPED; PENDING or PAID → CANCELED")


# The README's order as the API answers it.
ORDER_EXAMPLE: dict[str, Any] = {
    "id": "0b7e4c1e-5f2a-4c8e-9d3b-2a6f1e8c7d40",
    "user_id": 1,
    **ORDER_CREATE_EXAMPLE,
    "status": "PENDING",
    "created_at": "2025-01-31T09:30:00.123456Z",
    "updated_at": "2025-01-31T09:30:00.123456Z",
    "processed_at": None,
}


class OrderRead(BaseModel):
    model_config = ConfigDict(from_attributes=True, json_schema_extra={"examples": [ORDER_EXAMPLE]})

    id: uuid.UUID
    user_id: int = Field(description="The owner: the `sub` of the token that placed the order.")
    items: list[OrderItem]
    total_price: Money
    status: OrderStatus
    created_at: datetime
    updated_at: datetime = Field(description="The last status change (or the creation).")
    processed_at: datetime | None = Field(
        default=None,
        description="When background processing finished (the worker's `order_processed` "
        "event); null until then.",
    )
