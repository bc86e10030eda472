"""The connections of one worker process: the Redis of the outcome records, the publisher of
the reports, and Celery's broker (where failed tasks are parked). Built in each process on
first use: a prefork child never inherits its parent's sockets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis import Redis

from order_common.events import Envelope
from order_common.telemetry import instrument_redis
from order_worker.deadletters import broker_redis
from order_worker.publisher import BusPublisher
from order_worker.settings import Settings


@dataclass
class WorkerResources:
    """The connections of one worker process."""

    redis: Redis
    publisher: BusPublisher
    broker_redis: Redis  # Celery's broker: where failed tasks are dead-lettered

    def publish(self, envelope: Envelope[Any]) -> None:
        self.publisher.publish(envelope)

    def close(self) -> None:
        self.publisher.close()
        self.redis.close()
        self.broker_redis.close()


def open_resources(settings: Settings) -> WorkerResources:
    redis = Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
    )
    instrument_redis(redis)
    return WorkerResources(
        redis=redis,
        publisher=BusPublisher(settings.amqp_url.get_secret_value(), settings.bus_topology()),
        broker_redis=broker_redis(settings),
    )
