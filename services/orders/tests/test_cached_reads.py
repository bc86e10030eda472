"""The fast path of ``GET /orders/{id}/``: the rate limit and the cache read in one Redis
round trip, and a hit answered with the stored bytes, which are the documented schema."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi import FastAPI
from order_testing import free_port
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from order_common.orders import OrderRead, OrderStatus
from orders_service.cache import OrderCache

from .conftest import VALID_ORDER, User

PlaceOrder = Callable[..., Awaitable[dict[str, Any]]]


def _order_schema(app: FastAPI) -> dict[str, Any]:
    document = app.openapi()
    ok = document["paths"]["/orders/{order_id}/"]["get"]["responses"]["200"]
    return {
        **ok["content"]["application/json"]["schema"],
        "components": document["components"],
    }


async def test_a_hit_is_the_stored_bytes_equal_to_a_miss_and_to_the_schema(
    client: httpx.AsyncClient,
    app: FastAPI,
    redis_client: Redis,
    user: User,
) -> None:
    body = {
        **VALID_ORDER,
        "items": [{"name": "Café «crème» \u2014 ☕", "quantity": 3, "price": "1.50"}],
    }
    body["total_price"] = "4.50"
    created = await client.post("/orders/", json=body, headers=user.headers)
    assert created.status_code == 201
    order_id = uuid.UUID(created.json()["id"])
    url = f"/orders/{order_id}/"

    hit = await client.get(url, headers=user.headers)
    redis_client.delete(app.state.cache.key(order_id))
    miss = await client.get(url, headers=user.headers)
    hit_again = await client.get(url, headers=user.headers)

    # The POST body is FastAPI's own serialisation of the response model.
    assert hit.content == miss.content == hit_again.content == created.content
    assert hit.headers["content-type"] == miss.headers["content-type"] == "application/json"
    assert hit.headers["content-length"] == str(len(created.content))
    jsonschema.Draft202012Validator(_order_schema(app)).validate(json.loads(hit.content))
    stored = redis_client.get(app.state.cache.key(order_id)) or b""
    assert stored.endswith(b" " + hit.content)


async def test_a_hit_still_checks_the_owner(
    client: httpx.AsyncClient, user: User, other_user: User, place_order: PlaceOrder
) -> None:
    created = await place_order(user)  # the POST cached it
    theirs = await client.get(f"/orders/{created['id']}/", headers=other_user.headers)
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": "order not found"}


async def test_an_entry_of_the_former_json_form_is_read_from_the_database_and_replaced(
    client: httpx.AsyncClient,
    app: FastAPI,
    redis_client: Redis,
    user: User,
    place_order: PlaceOrder,
) -> None:
    created = await place_order(user)
    key = app.state.cache.key(uuid.UUID(created["id"]))
    # What the cache held before stored bytes: the order's JSON plus its row version.
    redis_client.set(key, json.dumps({**created, "version": 1}), ex=60)

    first = await client.get(f"/orders/{created['id']}/", headers=user.headers)
    replaced = redis_client.get(key) or b""

    assert first.json() == created
    assert replaced.startswith(b"o1 1 ")


async def test_the_version_guard_applies_to_an_entry_of_the_former_form(
    app: FastAPI, redis_client: Redis, user: User, place_order: PlaceOrder
) -> None:
    created = await place_order(user)
    key = app.state.cache.key(uuid.UUID(created["id"]))
    newer = json.dumps({**created, "status": "PAID", "version": 2})
    redis_client.set(key, newer, ex=60)
    order = await app.state.cache.get(uuid.UUID(created["id"]))
    assert order is None  # not of the current form: a miss

    from order_common.orders import OrderRead

    await app.state.cache.put(OrderRead.model_validate(created), 1)
    assert redis_client.get(key) == newer.encode()


async def test_the_get_limit_is_shared_with_the_other_routes_and_by_two_api_processes(
    start_app: Any, user: User, place_order: PlaceOrder
) -> None:
    async with AsyncExitStack() as stack:
        (_, first), (_, second) = [
            await stack.enter_async_context(start_app(rate_limit_orders="4/minute"))
            for _ in range(2)
        ]
        created = await first.post("/orders/", json=VALID_ORDER, headers=user.headers)
        url = f"/orders/{created.json()['id']}/"
        statuses = [
            (await first.get(url, headers=user.headers)).status_code,
            (await second.get(url, headers=user.headers)).status_code,
            (await second.get(f"/orders/user/{user.id}/", headers=user.headers)).status_code,
        ]
        limited = await first.get(url, headers=user.headers)
        limited_elsewhere = await second.get(url, headers=user.headers)

    assert created.status_code == 201
    assert statuses == [200, 200, 200]
    assert limited.status_code == limited_elsewhere.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "rate limit exceeded: 4 per 1 minute" in limited.json()["detail"]


@pytest.fixture
def private_redis() -> Iterator[str]:
    """A Redis of this test's own, so its command statistics count only this test."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Redis(port=port) as probe:
            for _ in range(100):
                try:
                    probe.ping()
                    break
                except Exception:
                    time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(timeout=10)


_HANDSHAKE = {"HELLO", "CLIENT"}


class CommandLog:
    """The commands clients send to a Redis, from MONITOR (commands a script runs inside the
    server are told apart: their source is "lua")."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._sentinel = f"end-of-log-{uuid.uuid4().hex}"
        self.commands: list[str] = []
        self.in_scripts: list[str] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def __enter__(self) -> CommandLog:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def _run(self) -> None:
        with Redis.from_url(self._url) as redis, redis.monitor() as monitor:
            self._ready.set()
            while True:
                entry = monitor.next_command()
                command = str(entry["command"])
                if self._sentinel in command:
                    return
                name = command.split()[0].upper()
                if name in _HANDSHAKE:
                    continue  # a new connection introducing itself (the sentinel's)
                target = self.in_scripts if entry["client_type"] == "lua" else self.commands
                target.append(name)

    def __exit__(self, *exc: object) -> None:
        with Redis.from_url(self._url) as redis:
            redis.echo(self._sentinel)
        assert self._thread is not None
        self._thread.join(5)


async def test_a_cached_get_costs_one_redis_round_trip(
    start_app: Any, user: User, private_redis: str
) -> None:
    async with start_app(redis_url=private_redis) as (_, client):
        created = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        url = f"/orders/{created.json()['id']}/"
        with CommandLog(private_redis) as log:
            hit = await client.get(url, headers=user.headers)

    assert hit.status_code == 200
    assert hit.json() == created.json()
    assert log.commands == ["EVALSHA"]  # the rate limit and the cache read, one script
    assert "GET" in log.in_scripts


@pytest.mark.parametrize("limit", ["0/minute", "ten per minute"])
def test_a_rate_limit_that_cannot_work_stops_the_start_up(limit: str) -> None:
    from pydantic import ValidationError

    from orders_service.settings import Settings

    with pytest.raises(ValidationError, match="rate limit"):
        Settings(_env_file=None, rate_limit_orders=limit)  # type: ignore[call-arg]


def an_order(user_id: int = 7) -> OrderRead:
    now = datetime.now(UTC)
    return OrderRead(
        id=uuid.uuid4(),
        user_id=user_id,
        items=VALID_ORDER["items"],
        total_price=VALID_ORDER["total_price"],
        status=OrderStatus.PENDING,
        created_at=now,
        updated_at=now,
    )


async def test_put_many_costs_one_round_trip_of_evalsha_and_keeps_the_version_guard(
    private_redis: str,
) -> None:
    redis = AsyncRedis.from_url(private_redis)
    cache = OrderCache(redis, key_prefix="t", ttl_seconds=60)
    try:
        newer, older, fresh = an_order(), an_order(), an_order()
        await cache.put(newer, 5)  # loads the script; a later version is already cached
        with CommandLog(private_redis) as log:
            await cache.put_many([(newer, 3), (older, 1), (fresh, 1)])
        # No SCRIPT EXISTS before the pipeline: one round trip.
        assert log.commands == ["EVALSHA"] * 3
        assert (await cache.get_entry(newer.id)).version == 5  # type: ignore[union-attr]
        assert await cache.get(fresh.id) == fresh
    finally:
        await redis.aclose()


async def test_put_many_loads_the_script_once_when_redis_lost_it(private_redis: str) -> None:
    redis = AsyncRedis.from_url(private_redis)
    cache = OrderCache(redis, key_prefix="t", ttl_seconds=60)
    try:
        orders = [an_order(), an_order()]
        await redis.script_flush()  # a restarted Redis (a Redis of this test's own)
        with CommandLog(private_redis) as log:
            await cache.put_many([(order, 1) for order in orders])
        assert log.commands == ["EVALSHA", "EVALSHA", "SCRIPT", "EVALSHA", "EVALSHA"]
        assert [await cache.get(order.id) for order in orders] == orders
    finally:
        await redis.aclose()
