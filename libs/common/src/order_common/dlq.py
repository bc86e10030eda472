"""Dead-letter tooling: look at what a dead-letter queue holds and re-drive it.

``{queue}.dlq`` is re-driven into ``{queue}`` (that subscriber only, attempts reset);
``{exchange}.unrouted`` is re-driven into ``{exchange}`` with each message's own routing key,
for messages published before any queue was bound for them.

Command line (the ``order-bus`` script of order-common)::

    order-bus dlq show    --queue order-platform.event-consumer.new_order [--limit 20]
    order-bus dlq redrive --queue order-platform.event-consumer.new_order [--limit 100]
    order-bus dlq show    --queue order-platform.events.unrouted

``--queue`` takes the subscriber's queue or its ``.dlq``; the broker comes from ``--amqp-url``,
else the first of ``BUS_AMQP_URL`` and the services' own ``ORDERS_AMQP_URL``,
``CONSUMER_AMQP_URL``, ``WORKER_AMQP_URL`` (so ``kubectl exec deploy/<release>-orders -- order-bus
...`` needs no extra flag), else ``amqp://guest:guest@127.0.0.1:5672/``. Output is JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from order_common.bus import (
    ATTEMPTS_HEADER,
    DEAD_LETTERED_AT_HEADER,
    DEFAULT_AMQP_URL,
    ERROR_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    REASON_HEADER,
    REDRIVES_HEADER,
    Topology,
    republished,
)

logger = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"
UNROUTED_SUFFIX = ".unrouted"
_PREVIEW_BYTES = 2000


# Where a pod or a shell already says which broker: the CLI's own variable, then the services'.
AMQP_URL_VARIABLES = ("BUS_AMQP_URL", "ORDERS_AMQP_URL", "CONSUMER_AMQP_URL", "WORKER_AMQP_URL")


def amqp_url_from_env(environ: Mapping[str, str]) -> str:
    return next((environ[v] for v in AMQP_URL_VARIABLES if environ.get(v)), DEFAULT_AMQP_URL)


def normalize_queue(queue: str) -> str:
    """A subscriber's queue name means its dead-letter queue."""
    if queue.endswith((DLQ_SUFFIX, UNROUTED_SUFFIX)):
        return queue
    return queue + DLQ_SUFFIX


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    routing_key: str | None
    reason: str | None  # ours (poison, rejected, max-attempts) or the broker's (delivery_limit)
    error: str | None
    attempts: int | None
    original_routing_key: str | None
    headers: dict[str, Any]
    body: bytes

    @classmethod
    def of(cls, message: AbstractIncomingMessage) -> DeadLetter:
        headers = dict(message.headers or {})
        reason = headers.get(REASON_HEADER) or headers.get("x-first-death-reason")
        attempts = headers.get(ATTEMPTS_HEADER)
        return cls(
            message_id=message.message_id,
            routing_key=message.routing_key,
            reason=None if reason is None else _text(reason),
            error=None if headers.get(ERROR_HEADER) is None else _text(headers[ERROR_HEADER]),
            attempts=attempts if isinstance(attempts, int) else None,
            original_routing_key=_optional_text(headers.get(ORIGINAL_ROUTING_KEY_HEADER)),
            headers=headers,
            body=message.body,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "reason": self.reason,
            "error": self.error,
            "attempts": self.attempts,
            "original_routing_key": self.original_routing_key,
            "dead_lettered_at": _optional_text(self.headers.get(DEAD_LETTERED_AT_HEADER)),
            "body": self.body[:_PREVIEW_BYTES].decode("utf-8", errors="replace"),
        }


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


async def count_messages(channel: AbstractChannel, queue: str) -> int:
    """Ready messages in ``queue`` (not those delivered and unacked). Asks the broker each time:
    a robust channel answers a passive declaration of a queue it knows from its cache."""
    underlay = await channel.get_underlay_channel()
    declared = await underlay.queue_declare(queue, passive=True)
    return int(declared.message_count or 0)


async def peek(connection: AbstractConnection, queue: str, limit: int = 10) -> list[DeadLetter]:
    """Up to ``limit`` messages from the head of ``queue``, left in it: they are fetched
    without an ack on a channel of their own, whose closing hands them back. Returns once
    the broker shows them back in the queue, so a count or a re-drive right after sees them."""
    channel = await connection.channel()
    try:
        before = await count_messages(channel, queue)  # fails if there is no such queue
        source = await channel.get_queue(queue, ensure=False)
        found: list[DeadLetter] = []
        for _ in range(limit):
            message = await source.get(no_ack=False, fail=False)
            if message is None:
                break
            found.append(DeadLetter.of(message))
    finally:
        await channel.close()
    if found:
        await _wait_for_count(connection, queue, before)
    return found


async def _wait_for_count(
    connection: AbstractConnection, queue: str, expected: int, patience: float = 5.0
) -> None:
    # A quorum queue takes the returned messages back asynchronously after the channel closed.
    channel = await connection.channel()
    try:
        for _ in range(int(patience / 0.02)):
            if await count_messages(channel, queue) >= expected:
                return
            await asyncio.sleep(0.02)
    finally:
        await channel.close()


async def redrive(connection: AbstractConnection, queue: str, limit: int | None = None) -> int:
    """Move the messages of a dead-letter (or unrouted) queue back to where they are consumed,
    attempts reset. Each is acked only after the broker confirmed its copy, so a crash repeats
    one rather than losing it. Moves at most the messages there at the start (and ``limit``),
    so one that fails again cannot loop. Returns how many moved."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        budget = await count_messages(channel, queue)
        source = await channel.get_queue(queue, ensure=False)
        if queue.endswith(DLQ_SUFFIX):
            target_queue = queue.removesuffix(DLQ_SUFFIX)
            await count_messages(channel, target_queue)  # no such queue: fail before moving
            exchange = channel.default_exchange
        elif queue.endswith(UNROUTED_SUFFIX):
            target_queue = None
            exchange = await channel.get_exchange(queue.removesuffix(UNROUTED_SUFFIX))
        else:
            raise ValueError(f"{queue} is neither a dead-letter nor an unrouted queue")

        if limit is not None:
            budget = min(budget, limit)
        moved = 0
        while moved < budget:
            message = await source.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = _reset(dict(message.headers or {}))
            if target_queue is not None:
                routing_key = target_queue
            else:
                original = headers.get(ORIGINAL_ROUTING_KEY_HEADER)
                routing_key = _text(original) if original else message.routing_key or ""
            await exchange.publish(
                republished(message, headers), routing_key=routing_key, mandatory=False
            )
            await message.ack()
            moved += 1
        return moved
    finally:
        await channel.close()


def _reset(headers: dict[str, Any]) -> dict[str, Any]:
    redrives = headers.get(REDRIVES_HEADER)
    kept = {
        key: value
        for key, value in headers.items()
        if key not in {ATTEMPTS_HEADER, REASON_HEADER, ERROR_HEADER, DEAD_LETTERED_AT_HEADER}
    }
    kept[REDRIVES_HEADER] = (redrives if isinstance(redrives, int) else 0) + 1
    kept["x-redriven-at"] = datetime.now(UTC).isoformat()
    return kept


def _routing_key_of(message: AbstractIncomingMessage, headers: Mapping[str, Any]) -> str:
    original = headers.get(ORIGINAL_ROUTING_KEY_HEADER)
    return _text(original) if original else message.routing_key or ""


async def adopt_unrouted(
    connection: AbstractConnection, topology: Topology, event_types: Collection[str]
) -> int:
    """The start-up step of a process on the bus, once its subscribers are consuming: events
    published before any queue was bound for them (the relay ran before the consumer's first
    start) waited in the topology's shared unrouted queue; send those of ``event_types`` (the
    types this process subscribes to) through the exchange again, so they reach the queues
    bound for them now. The others stay where they are, not republished: they are held
    unacked during the pass and handed back (nack, requeue) at its end, so they keep their
    place and their 7-day ``x-message-ttl`` runs on (an event type nobody subscribes to
    expires instead of being renewed at every start). The pass covers at most the messages
    there at its start. Each moved message is acked only after the broker confirmed its copy.

    Safe to run any time and from any process; run it in the background
    (``adopt_unrouted_in_background``): the process need not wait for it. ``order-bus dlq
    redrive --queue <exchange>.unrouted`` re-drives every type by hand. Returns how many
    moved; a failure is logged, never raised: the subscribers are consuming already."""
    wanted = {str(event_type) for event_type in event_types}
    queue = topology.unrouted_queue
    try:
        moved, kept = await _adopt(connection, topology, wanted)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.warning("could not re-drive the unrouted queue: %s", exc)
        return 0
    if moved or kept:
        logger.info(
            "re-drove %d unrouted events of %s; left %d of other types",
            moved,
            ", ".join(sorted(wanted)),
            kept,
            extra={"queue": queue},
        )
    return moved


async def _adopt(
    connection: AbstractConnection, topology: Topology, wanted: set[str]
) -> tuple[int, int]:
    channel = await connection.channel(publisher_confirms=True)
    held: list[AbstractIncomingMessage] = []
    moved = 0
    try:
        budget = await count_messages(channel, topology.unrouted_queue)
        source = await channel.get_queue(topology.unrouted_queue, ensure=False)
        exchange = await channel.get_exchange(topology.exchange, ensure=False)
        for _ in range(budget):
            message = await source.get(no_ack=False, fail=False)
            if message is None:
                break
            headers = dict(message.headers or {})
            routing_key = _routing_key_of(message, headers)
            if routing_key not in wanted:
                held.append(message)  # unacked until the end of the pass: not seen twice
                continue
            await exchange.publish(
                republished(message, _reset(headers)), routing_key=routing_key, mandatory=False
            )
            await message.ack()
            moved += 1
        return moved, len(held)
    finally:
        try:
            for message in held:
                await message.nack(requeue=True)
        finally:
            # Closing hands back whatever was not settled (also on cancellation).
            with contextlib.suppress(Exception):
                await channel.close()


def adopt_unrouted_in_background(
    connection: AbstractConnection, topology: Topology, event_types: Collection[str]
) -> asyncio.Task[int]:
    """``adopt_unrouted`` as a task, so the process starts its work at once. Keep the task;
    cancel it on the way out (``stop_adopting``): what it held goes back to the queue."""
    return asyncio.create_task(
        adopt_unrouted(connection, topology, event_types), name="adopt unrouted events"
    )


async def stop_adopting(task: asyncio.Task[int]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# --- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="order-bus", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--amqp-url",
        default=amqp_url_from_env(os.environ),
        help=f"broker URL (default: env {', '.join(AMQP_URL_VARIABLES)})",
    )
    groups = parser.add_subparsers(dest="group", required=True)
    dlq = groups.add_parser("dlq", help="dead-letter queues")
    actions = dlq.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="count and print the first messages (kept)")
    show.add_argument("--queue", required=True, help="subscriber queue, its .dlq, or .unrouted")
    show.add_argument("--limit", type=int, default=10)
    move = actions.add_parser("redrive", help="move the messages back, attempts reset")
    move.add_argument("--queue", required=True, help="subscriber queue, its .dlq, or .unrouted")
    move.add_argument("--limit", type=int, default=None)
    return parser


async def _run(args: argparse.Namespace) -> None:
    queue = normalize_queue(args.queue)
    connection = await aio_pika.connect(args.amqp_url)
    try:
        if args.action == "show":
            channel = await connection.channel()
            count = await count_messages(channel, queue)
            await channel.close()
            print(json.dumps({"queue": queue, "messages": count}))
            for letter in await peek(connection, queue, args.limit):
                print(json.dumps(letter.as_json()))
        else:
            moved = await redrive(connection, queue, args.limit)
            print(json.dumps({"queue": queue, "redriven": moved}))
    finally:
        await connection.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        asyncio.run(_run(args))
    except (aio_pika.exceptions.AMQPError, ValueError, OSError) as exc:
        print(f"order-bus: {type(exc).__name__}: {exc}", file=sys.stderr)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
