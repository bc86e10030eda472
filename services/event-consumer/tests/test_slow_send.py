"""A send to Celery's broker slower than the de-duplication claim's TTL (the broker's Redis
behind a TCP proxy that delays): the claim is renewed while the send is on its way, so a copy
of the event delivered meanwhile (to another consumer) waits instead of sending a second
task. Real Redis for the claims and as Celery's broker."""

from __future__ import annotations

import asyncio

import pytest
from order_testing import TcpProxy
from pydantic import ValidationError
from redis.asyncio import Redis

from event_consumer.consumer import EventInFlight, NewOrderHandler, create_celery_producer
from event_consumer.settings import Settings
from order_common.cache import build_redis
from order_common.delivery import Delivery, Handled

from .helpers import new_order_event, sent_orders


async def test_a_copy_delivered_during_a_send_slower_than_the_claim_ttl_sends_nothing(
    settings: Settings,
) -> None:
    async with TcpProxy(6379) as broker:
        slow = settings.model_copy(
            update={
                "celery_broker_url": settings.celery_broker_url.__class__(
                    broker.url("redis://127.0.0.1:{port}/1")
                ),
                "dedup_claim_ttl_seconds": 1,
                "celery_send_timeout_seconds": 10.0,
            }
        )
        redis: Redis = build_redis(slow.redis_url.get_secret_value(), slow.redis_timeout_seconds)
        celery_here, celery_there = create_celery_producer(slow), create_celery_producer(slow)
        here = NewOrderHandler(slow, redis, celery_here)
        there = NewOrderHandler(slow, redis, celery_there)  # another consumer replica
        event = new_order_event()
        warm_up = new_order_event()
        try:
            # Connected first (a new connection costs several round trips): then a send is
            # one round trip, and each packet to and from the broker waits a second.
            assert await here([Delivery(envelope=warm_up, attempt=1)]) == [Handled.OK]
            broker.delay = 1.0
            sending = asyncio.create_task(here([Delivery(envelope=event, attempt=1)]))
            await asyncio.sleep(1.4)  # past the claim's TTL; the send takes 2 s
            assert not sending.done()
            [copy] = await there([Delivery(envelope=event, attempt=1, redelivered=True)])
            assert isinstance(copy, EventInFlight)
            assert await asyncio.wait_for(sending, 30) == [Handled.OK]
            broker.delay = 0.0
            [again] = await there([Delivery(envelope=event, attempt=2, redelivered=True)])
            assert again is Handled.DUPLICATE
        finally:
            broker.delay = 0.0
            await redis.aclose()
            for celery in (celery_here, celery_there):
                await asyncio.to_thread(celery.close)
        orders = await sent_orders(slow)
    sent = sorted(order["event_id"] for order in orders)
    assert sent == sorted([str(warm_up.event_id), str(event.event_id)])  # one task each


def test_a_claim_ttl_its_renewal_could_miss_is_refused() -> None:
    with pytest.raises(ValidationError, match="renewal of a claim"):
        Settings(_env_file=None, dedup_claim_ttl_seconds=1, redis_timeout_seconds=0.7)  # type: ignore[call-arg]
    Settings(_env_file=None, dedup_claim_ttl_seconds=1, redis_timeout_seconds=0.5)  # type: ignore[call-arg]
