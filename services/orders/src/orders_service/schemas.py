"""Shapes the orders service needs beyond the public ones in ``order_common.orders``."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from order_common.orders import OrderRead

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Microseconds since the epoch (up to 17 digits: about the year 5100) and the order id's hex.
# Every string of this form is a position a page can start after, so the schema's pattern is
# the whole truth about what the API accepts.
CURSOR_PATTERN = r"^[0-9]{1,17}-[0-9a-f]{32}$"
_CURSOR = re.compile(CURSOR_PATTERN)


@dataclass(frozen=True)
class Cursor:
    """Where a page of a user's orders ends: the (created_at, id) of its last order.

    Clients treat it as an opaque token. Microseconds since the epoch keep the timestamp exact,
    so the next page starts precisely after the last row, even when timestamps tie."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        micros = (self.created_at - _EPOCH) // _MICROSECOND
        return f"{micros}-{self.id.hex}"

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Raises ValueError for anything not of ``encode``'s form."""
        if not _CURSOR.fullmatch(token):
            raise ValueError("not a cursor from a previous page")
        micros, _, order_id = token.partition("-")
        return cls(
            created_at=_EPOCH + timedelta(microseconds=int(micros)), id=uuid.UUID(hex=order_id)
        )

    @property
    def position(self) -> tuple[datetime, uuid.UUID]:
        return self.created_at, self.id


@dataclass(frozen=True)
class OrderPage:
    orders: list[OrderRead]
    next_cursor: Cursor | None
