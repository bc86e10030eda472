"""Password hashing: argon2id through passlib's CryptContext, always off the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
from passlib.context import CryptContext

T = TypeVar("T")

# Verified when the user is unknown, so that answer costs the same as a wrong password.
_DUMMY_PASSWORD = "not-a-real-password"  # noqa: S105


class PasswordHasher:
    def __init__(
        self, *, time_cost: int, memory_kib: int, parallelism: int, concurrency: int
    ) -> None:
        self._context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__rounds=time_cost,
            argon2__memory_cost=memory_kib,
            argon2__parallelism=parallelism,
        )
        # Each hash is CPU- and memory-bound: bound how many run at once (and in which threads).
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._dummy_hash: str | None = None

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._limiter)

    async def prepare(self) -> None:
        """Make the dummy hash with the current parameters (once, at startup)."""
        self._dummy_hash = await self.hash(_DUMMY_PASSWORD)

    async def hash(self, password: str) -> str:
        result: str = await self._run(self._context.hash, password)
        return result

    async def verify(self, password: str, stored_hash: str | None) -> tuple[bool, str | None]:
        """Return (valid, new_hash). ``new_hash`` is set when the stored hash was made with other
        parameters and should be replaced. With no stored hash (unknown user) the password is
        checked against the dummy hash, so both failures do the same work; the result is False."""
        if stored_hash is None:
            if self._dummy_hash is None:
                await self.prepare()
            assert self._dummy_hash is not None
            await self._run(self._context.verify, password, self._dummy_hash)
            return False, None
        valid, new_hash = await self._run(self._context.verify_and_update, password, stored_hash)
        return bool(valid), new_hash
