"""Running a subscriber's handlers on a batch of deliveries (``order_common.subscriber``): one
outcome per delivery; a batch handler that fails a batch of several runs again on each
delivery alone; and a dependency outage is waited out with back-off, pausing the subscriber,
without spending any delivery's attempts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from opentelemetry.trace import Span, use_span

from order_common.aio import RetryPolicy
from order_common.bus import RejectMessage
from order_common.delivery import BatchHandler, Delivery, Handler, Outcome
from order_common.metrics import BUS_OUTAGE_RETRIES, BUS_PAUSED
from order_common.redelivery import error_text

logger = logging.getLogger("order_common.subscriber")

# Waiting for an unreachable dependency: quick at first, then every 10 s at most, for ever.
OUTAGE_RETRY = RetryPolicy(max_attempts=1, base_delay=0.5, max_delay=10.0)


@dataclass
class Pending:
    """A delivery in hand: its message, headers, what the handler gets, and its span."""

    message: AbstractIncomingMessage
    headers: dict[str, Any]
    delivery: Delivery
    span: Span


class Abandoned(Exception):
    """stop() came during an outage: the batch is left unsettled, to be redelivered."""


def is_outage_outcome(outcome: Outcome, is_outage: Callable[[BaseException], bool]) -> bool:
    return (
        isinstance(outcome, Exception)
        and not isinstance(outcome, RejectMessage)
        and is_outage(outcome)
    )


class HandlerRunner:
    """Runs ``handler`` (on each delivery, concurrently) or ``batch_handler`` (once for all)
    for the subscriber ``subscriber`` of ``event_type`` on ``queue_name`` (named in logs and
    metrics)."""

    def __init__(
        self,
        *,
        handler: Handler | None,
        batch_handler: BatchHandler | None,
        is_outage: Callable[[BaseException], bool],
        outage_retry: RetryPolicy,
        subscriber: str,
        event_type: str,
        queue_name: str,
        stopping: asyncio.Event,
    ) -> None:
        self._handler = handler
        self._batch_handler = batch_handler
        self._is_outage = is_outage
        self._outage_retry = outage_retry
        self._subscriber = subscriber
        self._event_type = event_type
        self._queue_name = queue_name
        self._stopping = stopping

    async def run_handlers(self, items: Sequence[Pending]) -> list[Outcome]:
        """The outcome of each item: what its handler returned, or the exception it raised."""
        if self._batch_handler is not None:
            try:
                return await self._run_batch_handler(items)
            except Exception as exc:
                if len(items) == 1 or is_outage_outcome(exc, self._is_outage):
                    return [exc] * len(items)  # an outage is no delivery's fault: all wait
                # One delivery may be what fails the batch: run each alone, so only the one
                # that fails on its own spends an attempt (or is rejected).
                logger.warning(
                    "a batch of %d messages of %s failed; handling each alone: %s",
                    len(items),
                    self._queue_name,
                    error_text(exc),
                    extra={"queue": self._queue_name},
                )
                outcomes: list[Outcome] = []
                for item in items:
                    try:
                        outcomes.extend(await self._run_batch_handler([item]))
                    except Exception as alone:
                        outcomes.append(alone)
                return outcomes

        async def run_one(item: Pending) -> Outcome:
            assert self._handler is not None
            with use_span(item.span, end_on_exit=False):
                try:
                    return await self._handler(item.delivery)
                except Exception as exc:
                    return exc

        return list(await asyncio.gather(*(run_one(item) for item in items)))

    async def _run_batch_handler(self, items: Sequence[Pending]) -> list[Outcome]:
        assert self._batch_handler is not None
        with use_span(items[0].span, end_on_exit=False):
            outcomes = list(await self._batch_handler([i.delivery for i in items]))
        if len(outcomes) != len(items):
            raise RuntimeError("a batch handler must return one outcome per delivery")
        return outcomes

    async def handle_through_outages(self, items: list[Pending]) -> list[Outcome]:
        """Run the handlers; those that failed because a dependency is unreachable run again
        after a back-off, as often as it takes, without spending an attempt. Meanwhile this
        subscriber takes nothing new: its consumption is paused until the dependency is back
        (or ``stop()``, which leaves the messages to the queue: ``Abandoned``)."""
        outcomes: list[Outcome] = [None] * len(items)
        todo = list(range(len(items)))
        failures = 0
        while True:
            for index, outcome in zip(
                todo, await self.run_handlers([items[i] for i in todo]), strict=True
            ):
                outcomes[index] = outcome
            todo = [i for i in todo if is_outage_outcome(outcomes[i], self._is_outage)]
            if not todo:
                if failures:
                    logger.info(
                        "the dependency is back; consuming %s again",
                        self._queue_name,
                        extra={"queue": self._queue_name, "outage_retries": failures},
                    )
                    BUS_PAUSED.labels(self._subscriber, self._event_type).set(0)
                return outcomes
            failures += 1
            delay = self._outage_retry.delay(failures)
            error = outcomes[todo[0]]
            assert isinstance(error, BaseException)
            logger.warning(
                "a dependency is unreachable; %s paused, %d messages held, retrying in %.1f s "
                "(attempts not counted): %s",
                self._queue_name,
                len(todo),
                delay,
                error_text(error),
                extra={"queue": self._queue_name, "outage_retries": failures},
            )
            BUS_PAUSED.labels(self._subscriber, self._event_type).set(1)
            BUS_OUTAGE_RETRIES.labels(self._subscriber, self._event_type).inc(len(todo))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            if self._stopping.is_set():
                BUS_PAUSED.labels(self._subscriber, self._event_type).set(0)
                raise Abandoned
