"""Money is ``Decimal`` with two places end to end; it is never a float."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, WithJsonSchema

CENT = Decimal("0.01")
# NUMERIC(10, 2): eight digits before the point.
MAX_AMOUNT = Decimal("99999999.99")


# The documented string form; anything else ("1e2", "+1", " 1", "-0.00", "1.005") is refused.
MONEY_PATTERN = r"^\d{1,8}(\.\d{1,2})?$"
_MONEY_STRING = re.compile(MONEY_PATTERN)


def _documented_form(value: Any) -> Any:
    """Only the forms the schema states: a string matching the pattern, or a finite,
    non-negative JSON number. ``-0.00`` is not an amount."""
    if isinstance(value, str):
        if not _MONEY_STRING.fullmatch(value):
            raise ValueError('must be a decimal string like "25.50": digits, at most two places')
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        if math.copysign(1.0, value) < 0:
            raise ValueError("must not be negative")
    return value


def _two_places(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value.is_signed():
        raise ValueError("must not be negative")
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
    BeforeValidator(_documented_form),
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
                {"type": "string", "pattern": MONEY_PATTERN},
                {
                    "type": "number",
                    "minimum": 0,
                    "maximum": float(MAX_AMOUNT),
                    "multipleOf": float(CENT),
                },
            ],
            "description": _MONEY_DESCRIPTION + " A JSON number is accepted too.",
            "examples": ["451.00"],
        },
        mode="validation",
    ),
]
