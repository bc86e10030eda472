"""The password hasher: argon2id in its own threads, at most ``concurrency`` at once, niced so
that a login storm leaves the cores to request handling first (``AUTH_PASSWORD_HASH_NICENESS``)."""

from __future__ import annotations

import asyncio
import os
import threading

from auth_service.security import PasswordHasher
from auth_service.settings import Settings


def _hasher(*, niceness: int, concurrency: int = 2) -> PasswordHasher:
    return PasswordHasher(
        time_cost=1, memory_kib=1024, parallelism=1, concurrency=concurrency, niceness=niceness
    )


def _priorities() -> dict[str, int]:
    return {
        t.name: os.getpriority(os.PRIO_PROCESS, t.native_id)
        for t in threading.enumerate()
        if t.name.startswith("password-hash") and t.native_id is not None
    }


def _own_priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_hashing_threads_run_niced_and_the_event_loop_does_not() -> None:
    before = _own_priority()
    hasher = _hasher(niceness=7)
    try:
        await asyncio.gather(*(hasher.hash(f"pw-{i}") for i in range(4)))
        niced = {name: p for name, p in _priorities().items() if p == min(before + 7, 19)}
        assert niced, _priorities()
        assert _own_priority() == before
    finally:
        hasher.close()


async def test_niceness_zero_keeps_the_priority() -> None:
    before = _own_priority()
    hasher = _hasher(niceness=0, concurrency=1)
    seen: list[int] = []
    try:
        await hasher._run(lambda: seen.append(_own_priority()))
        assert seen == [before]
    finally:
        hasher.close()


async def test_niced_hashes_still_verify() -> None:
    hasher = _hasher(niceness=10)
    try:
        stored = await hasher.hash("right-password")
        assert await hasher.verify("right-password", stored) == (True, None)
        assert (await hasher.verify("wrong-password", stored))[0] is False
        assert await hasher.verify("anything", None) == (False, None)
    finally:
        hasher.close()


def test_the_default_yields_to_request_handling() -> None:
    assert Settings().password_hash_niceness > 0
