"""The `event-consumer` process itself: SIGTERM finishes the messages in hand."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from aio_pika.abc import AbstractRobustConnection
from pydantic import SecretStr

from event_consumer.consumer import SUBSCRIBER
from event_consumer.settings import Settings
from order_common.bus import declare_exchange, declare_subscription, publish_envelope
from order_common.dlq import count_messages
from order_common.events import EventType

from .helpers import new_order_event, sent_orders

EVENTS = 400


def environment(settings: Settings) -> dict[str, str]:
    values = settings.model_dump(
        include={
            "amqp_url",
            "bus_exchange",
            "bus_queue_prefix",
            "redis_url",
            "redis_key_prefix",
            "celery_broker_url",
            "celery_key_prefix",
            "celery_queue",
        }
    )
    values["metrics_port"] = 0  # the default port may be taken by a running stack
    values = {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in values.items()}
    return {**os.environ, **{f"CONSUMER_{k.upper()}": str(v) for k, v in values.items()}}


async def test_sigterm_lets_the_consumer_finish_the_messages_in_hand_and_exit(
    settings: Settings, amqp: AbstractRobustConnection
) -> None:
    channel = await amqp.channel()
    topology = settings.bus_topology()
    queue = await declare_subscription(channel, topology, SUBSCRIBER, EventType.NEW_ORDER)
    exchange = await declare_exchange(channel, topology)
    await asyncio.gather(*(publish_envelope(exchange, new_order_event()) for _ in range(EVENTS)))

    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "event-consumer"),
        env=environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    while not any("new_order received" in line for line in lines):
        line = await asyncio.wait_for(process.stdout.readline(), 20)
        assert line, "the consumer exited before receiving anything:\n" + "".join(lines)
        lines.append(line.decode())

    process.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(process.communicate(), 30)
    lines.extend(rest.decode().splitlines())
    assert process.returncode == 0, "\n".join(lines)

    messages = [json.loads(line)["message"] for line in lines if line.startswith("{")]
    received = sum(message.startswith("new_order received") for message in messages)
    sent = sum(message.startswith("process_order sent") for message in messages)
    assert received == sent  # every handler that started, finished
    assert len(await sent_orders(settings)) == sent
    assert sent > 0
    # Every event was either handed to Celery and acked, or is still waiting in the queue:
    # none was sent and then returned to the queue, none was lost.
    await asyncio.sleep(0.5)  # a message returned unacked would be back in the queue by now
    assert sent + await count_messages(channel, queue.name) == EVENTS
    assert "stopped consuming " + queue.name in messages
    assert messages[-1] == "event consumer stopped"
    await channel.close()
