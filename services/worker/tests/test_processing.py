"""``order_worker.processing.process_order`` is plain code: given a Redis and a ``publish``,
it processes an order once and reports it, however often the report fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis

from order_common.events import Envelope, EventType
from order_common.tasks import ProcessOrder
from order_worker.processing import Outcome, marker_key, process_order
from order_worker.settings import Settings


@pytest.fixture
def redis(settings: Settings) -> Iterator[Redis]:
    client = Redis.from_url(settings.redis_url.get_secret_value())
    yield client
    client.close()


def test_a_failing_report_is_retried_without_processing_again(
    settings: Settings, redis: Redis
) -> None:
    request = ProcessOrder(order_id=uuid.uuid4(), event_id=uuid.uuid4())
    reports: list[Envelope[Any]] = []
    failures = [ConnectionError("broker down"), ConnectionError("still down")]

    def publish(report: Envelope[Any]) -> None:
        if failures:
            raise failures.pop(0)
        reports.append(report)

    def run() -> str:
        return process_order(
            request,
            redis=redis,
            publish=publish,
            key_prefix=settings.redis_key_prefix,
            delay_seconds=0,
            marker_ttl_seconds=60,
        )

    with pytest.raises(ConnectionError):
        run()
    key = marker_key(settings.redis_key_prefix, request.order_id)
    recorded = Outcome.load(redis.get(key))
    assert recorded is not None
    assert not recorded.reported
    with pytest.raises(ConnectionError):
        run()
    assert run() == "reported"
    assert run() == "skipped"

    # One outcome, made on the first try: the later tries only reported it.
    [report] = reports
    assert report.event_id == recorded.report_id
    assert report.data.processed_at == recorded.processed_at
    final = Outcome.load(redis.get(key))
    assert final is not None
    assert final.reported
    assert report.event_type == EventType.ORDER_PROCESSED
    assert report.data.order_id == request.order_id
