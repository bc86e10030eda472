"""Where a message goes when its handler failed: back to its queue's retry queue with a delay
(the attempt counted in its headers), or to the dead-letter exchange with its reason, error and
attempts. Used by ``order_common.subscriber.Subscriber``; ``order_common.dlq`` reads and
re-drives what lands there."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from order_common.aio import RetryPolicy
from order_common.bus import (
    ATTEMPTS_HEADER,
    DEAD_LETTERED_AT_HEADER,
    ERROR_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    QUEUE_HEADER,
    REASON_HEADER,
    DeadLetterReason,
    RejectMessage,
    republished,
    retry_queue_name,
)

logger = logging.getLogger(__name__)

MAX_ERROR_LENGTH = 2000


def attempts_so_far(headers: Mapping[str, Any]) -> int:
    """The handler runs a message has had, from its headers (0 for a first delivery)."""
    try:
        return max(0, int(headers.get(ATTEMPTS_HEADER, 0)))
    except (TypeError, ValueError):
        return 0


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH]


class Redelivery:
    """Republishes the failed messages of one queue, on the subscriber's confirming channel."""

    def __init__(
        self,
        channel: AbstractChannel,
        dead_letter_exchange: AbstractExchange,
        queue_name: str,
        *,
        publish_timeout: float,
    ) -> None:
        self._channel = channel
        self._dlx = dead_letter_exchange
        self.queue_name = queue_name
        self._publish_timeout = publish_timeout

    async def failed(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        exc: BaseException,
        *,
        attempt: int,
        retry: RetryPolicy,
        event_id: str,
    ) -> str:
        """Where a message whose handler raised ``exc`` on run ``attempt`` goes: the
        dead-letter queue if it was rejected (``RejectMessage``) or had its last run, else
        the retry queue with the next back-off. Returns the result it is counted as."""
        if isinstance(exc, RejectMessage):
            await self.dead_letter(message, headers, DeadLetterReason.REJECTED, exc, attempt)
            return "dead_lettered"
        if attempt >= retry.max_attempts:
            await self.dead_letter(message, headers, DeadLetterReason.MAX_ATTEMPTS, exc, attempt)
            return "dead_lettered"
        delay = retry.delay(attempt)
        logger.warning(
            "handler failed (attempt %d of %d), retrying in %.1f s: %s",
            attempt,
            retry.max_attempts,
            delay,
            error_text(exc),
            extra={"queue": self.queue_name, "event_id": event_id, "attempt": attempt},
        )
        await self.retry(message, headers, attempt, delay, exc)
        return "retried"

    async def retry(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        attempts: int,
        delay: float,
        exc: BaseException,
    ) -> None:
        headers = {
            **headers,
            ATTEMPTS_HEADER: attempts,
            ERROR_HEADER: error_text(exc),
            ORIGINAL_ROUTING_KEY_HEADER: headers.get(
                ORIGINAL_ROUTING_KEY_HEADER, message.routing_key or ""
            ),
        }
        await self._channel.default_exchange.publish(
            republished(message, headers, expiration=delay),
            routing_key=retry_queue_name(self.queue_name),
            mandatory=False,
            timeout=self._publish_timeout,
        )

    async def dead_letter(
        self,
        message: AbstractIncomingMessage,
        headers: dict[str, Any],
        reason: DeadLetterReason,
        exc: BaseException,
        attempts: int,
    ) -> None:
        error = error_text(exc)
        logger.error(
            "dead-lettering a message of %s (%s): %s",
            self.queue_name,
            reason,
            error,
            extra={"queue": self.queue_name, "reason": str(reason), "attempts": attempts},
        )
        headers = {
            **headers,
            REASON_HEADER: reason.value,
            ERROR_HEADER: error,
            ATTEMPTS_HEADER: attempts,
            QUEUE_HEADER: self.queue_name,
            DEAD_LETTERED_AT_HEADER: datetime.now(UTC).isoformat(),
            ORIGINAL_ROUTING_KEY_HEADER: headers.get(
                ORIGINAL_ROUTING_KEY_HEADER, message.routing_key or ""
            ),
        }
        await self._dlx.publish(
            republished(message, headers),
            routing_key=self.queue_name,
            mandatory=False,
            timeout=self._publish_timeout,
        )
