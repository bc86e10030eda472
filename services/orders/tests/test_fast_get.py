"""The lean path of a cached ``GET /orders/{id}/`` (``orders_service.fast_get``): it answers
exactly what the route answers, and leaves every other request to the route, which then sees
the request counted once and Redis read once.

Which of the two answered is told by the route's own dependency (``rate_limited_cache_read``),
wrapped here to record its calls: the fast path never calls it."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY

from order_common.logging import OUTAGE_WARNINGS, JsonFormatter
from orders_service.deps import CurrentUser, OrderId, OrderLookup, rate_limited_cache_read

from .conftest import DEAD_REDIS_URL, VALID_ORDER, User
from .test_cached_reads import CommandLog, private_redis  # noqa: F401 - the fixture

PlaceOrder = Callable[..., Awaitable[dict[str, Any]]]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
ROUTE = "/orders/{order_id}/"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@asynccontextmanager
async def route_reads(app: FastAPI) -> AsyncIterator[list[uuid.UUID]]:
    """The ids the route's dependency was called for while inside (the requests the fast path
    left to the route)."""
    calls: list[uuid.UUID] = []

    async def recorded(request: Request, user: CurrentUser, order_id: OrderId) -> OrderLookup:
        calls.append(order_id)
        return await rate_limited_cache_read(request, user, order_id)

    app.dependency_overrides[rate_limited_cache_read] = recorded
    try:
        yield calls
    finally:
        del app.dependency_overrides[rate_limited_cache_read]


async def asgi_get(
    app: FastAPI, path: str, headers: list[tuple[bytes, bytes]], method: str = "GET"
) -> Answer:
    """The app's answer as the server gets it: status, header list (order and case as sent),
    body."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"orders.test"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], list(start["headers"]), body


def bearer(token: str, *extra: tuple[bytes, bytes]) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {token}".encode()), *extra]


def _requests_counted(status: int) -> float:
    labels = {"service": "orders", "method": "GET", "route": ROUTE, "status": str(status)}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


async def test_the_fast_path_answers_what_the_route_answers_byte_for_byte(
    app: FastAPI, user: User, place_order: PlaceOrder, make_token: Callable[..., str]
) -> None:
    created = await place_order(user)  # cached by the POST
    token = make_token(user.id)  # never seen: the first GET verifies it, on the route
    request = bearer(token, (b"x-request-id", b"same-request-id"))
    counted = _requests_counted(200)

    async with route_reads(app) as reads:
        by_route = await asgi_get(app, f"/orders/{created['id']}/", request)
        assert len(reads) == 1
        fast = await asgi_get(app, f"/orders/{created['id']}/", request)
        assert len(reads) == 1  # the second one never reached the route

    assert fast == by_route
    status, headers, body = fast
    assert status == 200
    assert json.loads(body) == created
    assert dict(headers)[b"x-request-id"] == b"same-request-id"
    assert _requests_counted(200) == counted + 2  # both, under the route's labels


async def test_the_path_without_its_slash_is_answered_too_and_counted_as_the_route(
    app: FastAPI, client: httpx.AsyncClient, user: User, place_order: PlaceOrder
) -> None:
    created = await place_order(user)
    counted = _requests_counted(200)
    async with route_reads(app) as reads:
        answer = await client.get(f"/orders/{created['id']}", headers=user.headers)

    assert reads == []
    assert answer.json() == created
    assert _requests_counted(200) == counted + 1


async def test_a_generated_request_id_is_sent_back_by_the_fast_path(
    app: FastAPI, client: httpx.AsyncClient, user: User, place_order: PlaceOrder
) -> None:
    created = await place_order(user)
    async with route_reads(app) as reads:
        answers = [
            await client.get(f"/orders/{created['id']}/", headers=user.headers) for _ in range(2)
        ]

    assert reads == []
    ids = [answer.headers["X-Request-ID"] for answer in answers]
    assert all(len(i) == 32 for i in ids)
    assert ids[0] != ids[1]


async def test_someone_elses_order_is_left_to_the_route_and_is_a_404(
    app: FastAPI, client: httpx.AsyncClient, user: User, other_user: User, place_order: PlaceOrder
) -> None:
    created = await place_order(user)
    await client.get(f"/orders/{uuid.uuid4()}/", headers=other_user.headers)  # token verified
    async with route_reads(app) as reads:
        theirs = await client.get(f"/orders/{created['id']}/", headers=other_user.headers)

    assert reads == [uuid.UUID(created["id"])]
    assert theirs.status_code == 404
    assert theirs.json() == {"detail": "order not found"}


@pytest.mark.parametrize(
    "token", ["not-a-token", "eyJhbGciOiJSUzI1NiJ9.e30.c2ln"], ids=["garbage", "forged"]
)
async def test_a_token_never_verified_is_left_to_the_route(
    app: FastAPI, client: httpx.AsyncClient, user: User, place_order: PlaceOrder, token: str
) -> None:
    created = await place_order(user)
    headers = {"Authorization": f"Bearer {token}"}
    async with route_reads(app) as reads:
        answers = [await client.get(f"/orders/{created['id']}/", headers=headers) for _ in range(2)]

    assert [a.status_code for a in answers] == [401, 401]
    assert reads == []  # refused by the token check, before the route's lookup
    assert answers[0].headers["WWW-Authenticate"] == "Bearer"


async def test_a_token_past_its_exp_is_never_answered_by_the_fast_path(
    app: FastAPI, user: User, place_order: PlaceOrder, make_token: Callable[..., str]
) -> None:
    created = await place_order(user)
    short_lived = make_token(user.id, ttl=1)
    exp = int(time.time()) + 1
    path = f"/orders/{created['id']}/"
    async with route_reads(app) as reads:
        first = await asgi_get(app, path, bearer(short_lived))  # verified and remembered
        second = await asgi_get(app, path, bearer(short_lived))
        assert len(reads) == 1
        assert first[0] == second[0] == 200
        await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
        await asgi_get(app, path, bearer(short_lived))

    assert len(reads) == 2  # past exp: the route's token check decides, not the fast path


@pytest.mark.parametrize(
    ("method", "extra", "form", "expected"),
    [
        ("HEAD", [], str, 405),  # the route is GET only
        ("GET", [(b"origin", b"http://localhost:3000")], str, 200),  # CORS adds headers
        ("GET", [(b"content-length", b"0")], str, 200),
        ("GET", [], lambda order_id: str(order_id).upper(), 200),
        ("GET", [], lambda order_id: uuid.UUID(order_id).hex, 200),
    ],
    ids=["head", "cors", "body", "uppercase-id", "hex-id"],
)
async def test_requests_the_fast_path_cannot_answer_whole_go_to_the_route(
    app: FastAPI,
    client: httpx.AsyncClient,
    user: User,
    place_order: PlaceOrder,
    method: str,
    extra: list[tuple[bytes, bytes]],
    form: Callable[[str], str],
    expected: int,
) -> None:
    created = await place_order(user)
    await client.get(f"/orders/{created['id']}/", headers=user.headers)  # token remembered
    async with route_reads(app) as reads:
        status, headers, body = await asgi_get(
            app, f"/orders/{form(created['id'])}/", bearer(user.token, *extra), method
        )

    assert status == expected
    if expected == 200:
        assert reads == [uuid.UUID(created["id"])]
        assert json.loads(body) == created
    if extra and extra[0][0] == b"origin":
        assert dict(headers)[b"access-control-allow-origin"] == b"http://localhost:3000"


async def test_a_patch_then_a_get_answers_the_new_state(
    app: FastAPI, client: httpx.AsyncClient, user: User, place_order: PlaceOrder
) -> None:
    created = await place_order(user)
    url = f"/orders/{created['id']}/"
    async with route_reads(app) as reads:
        before = await client.get(url, headers=user.headers)
        patched = await client.patch(url, json={"status": "PAID"}, headers=user.headers)
        after = await client.get(url, headers=user.headers)

    assert reads == []  # both GETs were hits, answered by the fast path
    assert before.json()["status"] == "PENDING"
    assert patched.status_code == 200
    assert after.json() == patched.json()
    assert after.json()["status"] == "PAID"


async def test_a_rate_limited_get_is_the_routes_429_and_each_request_counts_once(
    start_app: Any, user: User, other_user: User
) -> None:
    async with start_app(rate_limit_orders="4/minute") as (app, client):
        created = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        theirs = f"/orders/{created.json()['id']}/"
        async with route_reads(app) as reads:
            # Someone else's order: read by the fast path, answered (404) by the route.
            statuses = [
                (await client.get(theirs, headers=other_user.headers)).status_code for _ in range(4)
            ]
            limited = await client.get(theirs, headers=other_user.headers)

    assert statuses == [404, 404, 404, 404]  # four requests, four counted, not eight
    assert len(reads) == 5
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "rate limit exceeded: 4 per 1 minute" in limited.json()["detail"]


async def test_a_miss_left_to_the_route_reads_redis_once(
    start_app: Any,
    user: User,
    private_redis: str,  # noqa: F811 - the fixture imported above
) -> None:
    async with start_app(redis_url=private_redis) as (app, client):
        created = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        order_id = uuid.UUID(created.json()["id"])
        async with route_reads(app) as reads:
            await client.get(f"/orders/{order_id}/", headers=user.headers)  # a hit
            await app.state.redis.delete(app.state.cache.key(order_id))
            with CommandLog(private_redis) as log:
                miss = await client.get(f"/orders/{order_id}/", headers=user.headers)

    assert reads == [order_id]
    assert miss.json() == created.json()
    # The limit and the read (one script, by the fast path), then the refill: no second read.
    assert log.commands == ["EVALSHA", "EVALSHA"]


@pytest.fixture
def json_log() -> Iterator[list[dict[str, Any]]]:
    """The records of the cache and the rate limiter as the services write them (JSON lines,
    formatted when logged, so with the trace and request ids of that moment)."""
    lines: list[dict[str, Any]] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(JsonFormatter("orders").format(record)))

    handler = Collect(logging.WARNING)
    loggers = [logging.getLogger(n) for n in ("orders_service.cache", "order_common.ratelimit")]
    for logger in loggers:
        logger.addHandler(handler)
    OUTAGE_WARNINGS.reset()  # another test's outage may have said them a moment ago
    try:
        yield lines
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


async def test_with_redis_down_the_route_answers_from_postgresql_and_logs_carry_the_ids(
    start_app: Any, user: User, json_log: list[dict[str, Any]]
) -> None:
    def cache_get_errors() -> float:
        labels = {"op": "get", "result": "error"}
        return REGISTRY.get_sample_value("orders_cache_operations_total", labels) or 0.0

    async with start_app(redis_url=DEAD_REDIS_URL) as (app, client):
        created = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        url = f"/orders/{created.json()['id']}/"
        await client.get(url, headers=user.headers)  # the token verified and remembered
        errors = cache_get_errors()
        json_log.clear()
        OUTAGE_WARNINGS.reset()
        async with route_reads(app) as reads:
            fetched = await client.get(
                url,
                headers={**user.headers, "X-Request-ID": "down-1", "traceparent": TRACEPARENT},
            )

    assert fetched.status_code == 200
    assert fetched.json() == created.json()
    assert len(reads) == 1
    assert cache_get_errors() == errors + 1  # Redis was tried once for this request
    messages = {line["message"]: line for line in json_log}
    assert "order cache unavailable, using the database" in messages
    for line in json_log:
        assert line["request_id"] == "down-1"
        assert line["trace_id"] == TRACE_ID  # the caller's trace, continued


async def test_switched_off_every_get_goes_through_the_route(start_app: Any, user: User) -> None:
    async with start_app(fast_get=False) as (app, client):
        created = await client.post("/orders/", json=VALID_ORDER, headers=user.headers)
        url = f"/orders/{created.json()['id']}/"
        async with route_reads(app) as reads:
            answers = [await client.get(url, headers=user.headers) for _ in range(2)]

    assert [a.json() for a in answers] == [created.json()] * 2
    assert len(reads) == 2
