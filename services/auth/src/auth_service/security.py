"""Password hashing: argon2id through passlib's CryptContext, always off the event loop.

Hashes run in the hasher's own threads, at most ``concurrency`` at once per process, and those
threads run at a lower CPU priority (``nice``, Linux's per-thread niceness): argon2id is made to
be expensive, and under a login storm -- a credential-stuffing run, or a whole shift logging in
-- it would otherwise take the cores that order reads need. With the hashing threads niced, the
scheduler gives the cores to request handling first and to hashing with what is left; a login
takes longer only while the box is saturated, and the API's other answers do not queue behind
it (issue 9's login storm: the cached GET's p99 with logins hammering auth next to it)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from passlib.context import CryptContext

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Verified when the user is unknown, so that answer costs the same as a wrong password.
_DUMMY_PASSWORD = "not-a-real-password"  # noqa: S105


def lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by ``niceness`` (Linux keeps niceness per thread,
    so only this thread yields; raising it needs no privilege). Best effort: where the platform
    refuses, the thread keeps its priority and a warning says so."""
    if niceness <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except (AttributeError, OSError) as exc:  # pragma: no cover - non-Linux
        logger.warning("password hashing keeps its CPU priority", extra={"error": str(exc)})


class PasswordHasher:
    def __init__(
        self,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        concurrency: int,
        niceness: int = 0,
    ) -> None:
        self._context = CryptContext(
            schemes=["argon2"],
            argon2__type="ID",
            argon2__rounds=time_cost,
            argon2__memory_cost=memory_kib,
            argon2__parallelism=parallelism,
        )
        # Each hash is CPU- and memory-bound: bound how many run at once, in threads of our own
        # (argon2-cffi releases the GIL while it hashes).
        self._executor = ThreadPoolExecutor(
            max_workers=concurrency,
            thread_name_prefix="password-hash",
            initializer=lower_thread_priority,
            initargs=(niceness,),
        )
        self._dummy_hash: str | None = None

    async def _run(self, func: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    async def prepare(self) -> None:
        """Make the dummy hash with the current parameters (once, at startup)."""
        self._dummy_hash = await self.hash(_DUMMY_PASSWORD)

    def close(self) -> None:
        """Drop the queued hashes; the threads end once the hash in progress is done."""
        self._executor.shutdown(wait=False, cancel_futures=True)

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
