from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, Identity, String, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from order_common.db import naming_metadata

# RFC 5321 caps a forward path at 256 octets, so an address is at most 254 characters.
EMAIL_MAX_LENGTH = 254


class Base(DeclarativeBase):
    metadata = naming_metadata()


class User(Base):
    __tablename__ = "users"
    # Emails are stored lowercased; the check makes the unique constraint case-insensitive
    # without the citext extension (which needs CREATE privilege on the database).
    __table_args__ = (CheckConstraint("email = lower(email)", name="email_lowercase"),)
    # Fetch server-generated id and created_at with RETURNING on insert.
    __mapper_args__ = {"eager_defaults": True}

    id: Mapped[int] = mapped_column(Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
