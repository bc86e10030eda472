"""An order whose `new_order` was published but that stays unprocessed is announced again, under
a new event id, until it is processed: a task that Celery's Redis broker dropped in flight (the
chaos suite's worker SIGKILL and Redis outage cases found it) is asked for once more. Nothing
is announced again while its first announcement still waits in the outbox."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from order_testing import eventually
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from order_common.bus import declare_exchange
from order_common.events import EventType
from orders_service.settings import Settings

from .conftest import VALID_ORDER, User, running_relay

MakeSettings = Callable[..., Settings]


async def _announced_at(relay_db: AsyncEngine, order_id: str) -> Any:
    async with relay_db.connect() as conn:
        return (
            await conn.execute(
                text("SELECT announced_at FROM orders WHERE id = :id"), {"id": order_id}
            )
        ).scalar_one()


async def test_an_unprocessed_order_is_announced_again_until_it_is_processed(
    relay_settings: MakeSettings,
    relay_database_url: str,
    relay_db: AsyncEngine,
    amqp: AbstractRobustConnection,
    start_app: Any,
    user: User,
) -> None:
    settings = relay_settings(reannounce_after_seconds=0.5, reannounce_interval_seconds=0.2)
    channel = await amqp.channel()
    exchange = await declare_exchange(channel, settings.bus_topology())
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key=EventType.NEW_ORDER.value)
    announcements: list[tuple[str, str]] = []  # (order id, event id)

    async def on_message(message: AbstractIncomingMessage) -> None:
        event = json.loads(message.body)
        announcements.append((event["data"]["order_id"], event["event_id"]))
        await message.ack()

    await queue.consume(on_message)
    async with start_app(database_url=relay_database_url) as (_, client):
        response = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        assert response.status_code == 201, response.text
        order_id = response.json()["id"]
    # Not published yet: not announced, so never announced again meanwhile.
    assert await _announced_at(relay_db, order_id) is None

    def mine() -> list[str]:
        # (the relay database may hold other tests' unprocessed orders: they come back too)
        return [event for order, event in announcements if order == order_id]

    async with running_relay(settings):
        await eventually(lambda: len(mine()) >= 3, timeout=10)
        assert len(set(mine())) == len(mine()), "announced again under the same event id"

        async with relay_db.begin() as conn:
            await conn.execute(
                text("UPDATE orders SET processed_at = now() WHERE id = :id"), {"id": order_id}
            )
        await asyncio.sleep(0.5)  # an announcement claimed just before the update lands
        settled = len(mine())
        await asyncio.sleep(1.5)  # three times the threshold
        assert len(mine()) == settled
    await channel.close()
