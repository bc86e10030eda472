"""All queries of the auth service, and its unit of work."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from auth_service.models import User
from order_common.db import UnitOfWork

UNIQUE_VIOLATION = "23505"
EMAIL_UNIQUE_CONSTRAINT = "uq_users_email"


class EmailTaken(Exception):
    pass


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get_by_email(self, email: str) -> User | None:
        result = await self._session.execute(select(User).where(User.email == email))
        return result.scalar_one_or_none()

    async def add(self, email: str, password_hash: str) -> User:
        """Insert and flush; raises EmailTaken when the unique constraint says so (the race
        a pre-check cannot close)."""
        user = User(email=email, password_hash=password_hash)
        self._session.add(user)
        try:
            await self._session.flush()
        except IntegrityError as exc:
            if _is_email_unique_violation(exc):
                raise EmailTaken(email) from exc
            raise
        return user

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self._session.execute(
            update(User).where(User.id == user_id).values(password_hash=password_hash)
        )


def _is_email_unique_violation(exc: IntegrityError) -> bool:
    if getattr(exc.orig, "sqlstate", None) != UNIQUE_VIOLATION:
        return False
    # asyncpg's own exception (the adapted error's cause) names the constraint.
    constraint = getattr(getattr(exc.orig, "__cause__", None), "constraint_name", None)
    return constraint == EMAIL_UNIQUE_CONSTRAINT or EMAIL_UNIQUE_CONSTRAINT in str(exc.orig)


class AuthUnitOfWork(UnitOfWork):
    users: UserRepository

    def _start(self) -> None:
        self.users = UserRepository(self.session)
