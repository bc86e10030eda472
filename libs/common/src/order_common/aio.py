"""Asyncio helpers every long-running process uses: the one back-off policy of the repo,
bounded waits on events, and the first connection to a dependency, retried until it answers.

No third-party imports: the bus, the database code and the processes all build on this."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` runs in all; the n-th failure waits ``base_delay * 2**(n-1)`` seconds,
    capped at ``max_delay``. Every back-off in the repo is one of these."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_delay, self.base_delay * 2 ** max(0, failures - 1)))


# Reaching a dependency that is not there (yet): quick at first, then every 15 s, for ever.
CONNECT_RETRY = RetryPolicy(max_attempts=1, base_delay=0.5, max_delay=15.0)


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; whether it was set."""
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def first_set(*events: asyncio.Event) -> None:
    """Until any of ``events`` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def connect_with_retry(
    connect: Callable[[], Awaitable[T]],
    *,
    what: str,
    stop: asyncio.Event,
    policy: RetryPolicy = CONNECT_RETRY,
) -> T | None:
    """``await connect()`` until it succeeds, backing off by ``policy`` after each failure;
    ``None`` if ``stop`` is set first. This is how every process makes its first connection
    to RabbitMQ (and the relay its LISTEN connection): a process started before its
    dependency waits for it instead of crashing into a restart loop."""
    failures = 0
    while not stop.is_set():
        try:
            return await connect()
        except Exception as exc:
            failures += 1
            delay = policy.delay(failures)
            logger.warning(
                "%s unreachable (attempt %d), retrying in %.1f s: %s",
                what,
                failures,
                delay,
                f"{type(exc).__name__}: {exc}",
                extra={"dependency": what, "attempt": failures},
            )
            await wait_event(stop, delay)
    return None
