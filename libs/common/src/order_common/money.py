"""Money is ``Decimal`` with two places end to end; it is never a float."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, Field, PlainSerializer, WithJsonSchema

CENT = Decimal("0.01")
# NUMERIC(10, 2): eight digits before the point.
MAX_AMOUNT = Decimal("99999999.99")


def _two_places(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -2 and value != value.quantize(CENT):
        raise ValueError("must have at most 2 decimal places")
    return value.quantize(CENT)


_MONEY_DESCRIPTION = (
    "An exact decimal amount, 0 to 99999999.99 with at most two decimal places, written as a "
    'string ("25.50") so no client rounds it through a float.'
)

# Serialised as a JSON string ("451.00") so that clients in any language read it back exactly.
# The schemas say so: always a string with two places in answers; in requests a string is the
# documented form, and a JSON number is tolerated.
Money = Annotated[
    Decimal,
    Field(ge=0, le=MAX_AMOUNT, examples=["451.00"]),
    AfterValidator(_two_places),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\d{1,8}\.\d{2}$",
            "description": _MONEY_DESCRIPTION,
            "examples": ["451.00"],
        },
        mode="serialization",
    ),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": r"^\d{1,8}(\.\d{1,2})?$"},
                {"type": "number", "minimum": 0, "maximum": float(MAX_AMOUNT)},
            ],
            "description": _MONEY_DESCRIPTION + " A JSON number is accepted too.",
            "examples": ["451.00"],
        },
        mode="validation",
    ),
]
