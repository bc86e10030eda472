from __future__ import annotations

from decimal import Decimal

import pytest
from pydantic import ValidationError

from order_common.orders import (
    ALLOWED_TRANSITIONS,
    IllegalTransition,
    OrderCreate,
    OrderStatus,
    transition,
)

P, PD, S, C = OrderStatus.PENDING, OrderStatus.PAID, OrderStatus.SHIPPED, OrderStatus.CANCELED


def order(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "items": [
            {"name": "Laptop", "quantity": 1, "price": "400.00"},
            {"name": "Mouse", "quantity": 2, "price": "25.50"},
        ],
        "total_price": "451.00",
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize(("current", "requested"), [(P, PD), (PD, S), (P, C), (PD, C)])
def test_allowed_moves_change_the_status(current: OrderStatus, requested: OrderStatus) -> None:
    assert transition(current, requested) is True


@pytest.mark.parametrize("status", list(OrderStatus))
def test_setting_the_same_status_is_a_no_op(status: OrderStatus) -> None:
    assert transition(status, status) is False


@pytest.mark.parametrize(
    ("current", "requested"), [(P, S), (PD, P), (S, P), (S, PD), (S, C), (C, P), (C, PD), (C, S)]
)
def test_illegal_moves_raise_and_name_the_allowed_ones(
    current: OrderStatus, requested: OrderStatus
) -> None:
    with pytest.raises(IllegalTransition) as raised:
        transition(current, requested)
    message = str(raised.value)
    for allowed in ALLOWED_TRANSITIONS[current]:
        assert allowed in message
    if not ALLOWED_TRANSITIONS[current]:
        assert "final" in message


def test_money_round_trips_exactly() -> None:
    parsed = OrderCreate.model_validate_json(
        '{"items":[{"name":"A","quantity":3,"price":0.1}],"total_price":0.3}'
    )
    assert parsed.total_price == Decimal("0.30")
    assert parsed.model_dump(mode="json")["total_price"] == "0.30"
    assert OrderCreate.model_validate(order()).model_dump(mode="json")["total_price"] == "451.00"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order(items=[]), "items"),
        (order(items=[{"name": "A", "quantity": 1, "price": "1.00"}] * 101), "items"),
        (order(items=[{"name": "", "quantity": 1, "price": "1.00"}], total_price="1.00"), "name"),
        (order(items=[{"name": "x" * 201, "quantity": 1, "price": "1"}], total_price="1"), "name"),
        (order(items=[{"name": "A", "quantity": 0, "price": "1.00"}], total_price="0"), "quantity"),
        (
            order(items=[{"name": "A", "quantity": 10001, "price": "0"}], total_price="0"),
            "quantity",
        ),
        (order(items=[{"name": "A", "quantity": 1, "price": "-1"}], total_price="0"), "price"),
        (order(items=[{"name": "A", "quantity": 1, "price": "1.001"}], total_price="1"), "price"),
        (order(total_price="450.99"), "total_price"),
        (
            order(items=[{"name": "A", "quantity": 2, "price": "99999999.99"}], total_price="0"),
            "total_price",
        ),
        (order(total_price="100000000.00"), "total_price"),
    ],
)
def test_invalid_orders_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        OrderCreate.model_validate(body)
    assert field in str(raised.value)


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        OrderCreate.model_validate(order(discount="5.00"))
