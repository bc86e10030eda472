"""Shapes the orders service needs beyond the public ones in ``order_common.orders``."""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from order_common.orders import OrderRead

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Cursor:
    """Where a page of a user's orders ends: the (created_at, id) of its last order.

    Clients see it as an opaque token. Microseconds since the epoch keep the timestamp exact,
    so the next page starts precisely after the last row, even when timestamps tie."""

    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        micros = (self.created_at - _EPOCH) // _MICROSECOND
        raw = f"{micros}:{self.id.hex}".encode("ascii")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """Raises ValueError for anything ``encode`` did not produce."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
            micros, _, order_id = raw.partition(":")
            return cls(
                created_at=_EPOCH + timedelta(microseconds=int(micros)),
                id=uuid.UUID(hex=order_id),
            )
        except (binascii.Error, UnicodeDecodeError, ValueError, OverflowError) as exc:
            raise ValueError("not a cursor from a previous page") from exc

    @property
    def position(self) -> tuple[datetime, uuid.UUID]:
        return self.created_at, self.id


@dataclass(frozen=True)
class OrderPage:
    orders: list[OrderRead]
    next_cursor: Cursor | None
