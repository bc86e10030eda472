"""Real PostgreSQL, Redis and RabbitMQ: each run migrates its own databases and writes under its
own Redis prefix, each relay test declares its own exchange and queues, and all of it is
removed afterwards. Tokens are signed here with a throwaway RSA key whose JWKS the app fetches
through a mock transport (auth is another service)."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from order_testing import (
    AMQP_URL,
    amqp_connection,
    delete_topology,
    new_order_event,
    run_bus_settings,
    run_id,
)
from redis import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from order_common.bus import declare_exchange
from order_common.db import build_session_factory
from order_common.dbadmin import drop_database
from order_common.events import EventType
from order_common.migrations import upgrade
from orders_service import events
from orders_service.main import create_app
from orders_service.order_processed import SUBSCRIBER
from orders_service.settings import Settings
from orders_service.uow import OrdersUnitOfWork

POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
# Nothing listens on port 1: connections are refused at once.
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"
JWKS_URL = "http://auth.test/.well-known/jwks.json"
ISSUER = "order-platform-auth"
AUDIENCE = "order-platform"
KID = "test-key-1"

VALID_ORDER: dict[str, Any] = {
    "items": [
        {"name": "Laptop", "quantity": 1, "price": "400.00"},
        {"name": "Mouse", "quantity": 2, "price": "25.50"},
    ],
    "total_price": "451.00",
}

_user_ids = itertools.count(1000)


@dataclass(frozen=True)
class User:
    id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = f"{POSTGRES}/orders_test_{secrets.token_hex(6)}"
    upgrade("orders_service:migrations", url)
    yield url
    asyncio.run(drop_database(url))


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"test:{secrets.token_hex(6)}:orders"
    yield prefix
    with Redis.from_url(REDIS_URL) as redis:
        keys = list(redis.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            redis.delete(*keys)


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def jwks(signing_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    public = jwt.algorithms.RSAAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    return {"keys": [{**public, "kid": KID, "alg": "RS256", "use": "sig"}]}


@pytest.fixture(scope="session")
async def jwks_http(jwks: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    def serve(request: httpx.Request) -> httpx.Response:
        if str(request.url) == JWKS_URL:
            return httpx.Response(200, json=jwks)
        return httpx.Response(404)

    async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as client:
        yield client


@pytest.fixture(scope="session")
def make_token(signing_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    def make(
        subject: int | str, *, key: Any = None, kid: str = KID, ttl: int = 300, **claims: Any
    ) -> str:
        now = int(time.time())
        payload = {
            "sub": str(subject),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, key or signing_key, algorithm="RS256", headers={"kid": kid})

    return make


@pytest.fixture
def new_user(make_token: Callable[..., str]) -> Callable[[], User]:
    def make() -> User:
        user_id = next(_user_ids)
        return User(id=user_id, token=make_token(user_id))

    return make


@pytest.fixture
def user(new_user: Callable[[], User]) -> User:
    return new_user()


@pytest.fixture
def other_user(new_user: Callable[[], User]) -> User:
    return new_user()


@pytest.fixture(scope="session")
def make_settings(database_url: str, redis_prefix: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": database_url,
            "redis_url": REDIS_URL,
            "redis_key_prefix": redis_prefix,
            "jwks_url": JWKS_URL,
            "jwt_issuer": ISSUER,
            "jwt_audience": AUDIENCE,
            "db_pool_size": 5,
            **overrides,
        }
        return Settings(_env_file=None, **values)

    return make


AppClient = Callable[..., AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


@pytest.fixture(scope="session")
def start_app(make_settings: Callable[..., Settings], jwks_http: httpx.AsyncClient) -> AppClient:
    """An app with the lifespan running and a client for it; keyword arguments are settings."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        app = create_app(make_settings(**overrides), http_client=jwks_http)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://orders.test"
            ) as client,
        ):
            yield app, client

    return start


@pytest.fixture(scope="session")
async def running(start_app: AppClient) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with start_app() as pair:
        yield pair


@pytest.fixture(scope="session")
def app(running: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return running[0]


@pytest.fixture(scope="session")
def client(running: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return running[1]


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    """Direct access to the test database, for what the API does not show (the outbox) and
    for changes made behind the service's back."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def redis_client() -> Iterator[Redis]:
    with Redis.from_url(REDIS_URL) as redis:
        yield redis


@pytest.fixture
def place_order(client: httpx.AsyncClient) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def place(user: User, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await client.post("/orders/", json=body or VALID_ORDER, headers=user.headers)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    return place


# --- the relay and the bus ------------------------------------------------------------------


@pytest.fixture(scope="session")
def relay_database_url() -> Iterator[str]:
    """A database of the relay tests' own: they empty and drain its outbox at will, which the
    other tests' outbox rows must not see."""
    url = f"{POSTGRES}/orders_relay_test_{secrets.token_hex(6)}"
    upgrade("orders_service:migrations", url)
    yield url
    asyncio.run(drop_database(url))


@pytest.fixture(scope="session")
async def relay_db(relay_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(relay_database_url, poolclass=NullPool)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def amqp() -> AsyncIterator[aio_pika.abc.AbstractRobustConnection]:
    async with amqp_connection(AMQP_URL) as connection:
        yield connection


@pytest.fixture
async def relay_settings(
    make_settings: Callable[..., Settings],
    relay_database_url: str,
    relay_db: AsyncEngine,
    amqp: aio_pika.abc.AbstractRobustConnection,
) -> AsyncIterator[Callable[..., Settings]]:
    """Settings for relays on the relay database, with this test's own exchange and queues
    (deleted afterwards, messages included); the outbox starts empty."""
    async with relay_db.begin() as conn:
        await conn.execute(text("DELETE FROM outbox_events"))
    run = run_id()
    names = run_bus_settings(run)

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": relay_database_url,
            "amqp_url": AMQP_URL,
            "relay_poll_interval_seconds": 0.5,
            "bus_retry_base_delay_seconds": 0.2,
            **names,
            **overrides,
        }
        return make_settings(**values)

    yield make
    await delete_topology(amqp, make().bus_topology(), [(SUBSCRIBER, EventType.ORDER_PROCESSED)])


@asynccontextmanager
async def running_relay(settings: Settings) -> AsyncIterator[events.EventsProcess]:
    """``orders-service events`` (the relay and the order_processed subscriber) as a task of
    the test's event loop (``process.started`` tells when it has connected)."""
    stop = asyncio.Event()
    process = events.EventsProcess(settings)
    task = asyncio.create_task(process.run(stop))
    try:
        yield process
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


@asynccontextmanager
async def published_events(
    amqp: aio_pika.abc.AbstractRobustConnection, settings: Settings
) -> AsyncIterator[list[str]]:
    """The event ids that reach the test's exchange, in arrival order, as long as it is open
    (every message persistent, as the relay publishes them)."""
    channel = await amqp.channel()
    exchange = await declare_exchange(channel, settings.bus_topology())
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key="#")
    seen: list[str] = []

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        seen.append(str(message.message_id))
        await message.ack()

    await queue.consume(on_message)
    try:
        yield seen
    finally:
        await channel.close()


async def add_outbox_events(
    relay_db: AsyncEngine, count: int, *, notify: bool = False
) -> list[str]:
    """``count`` committed `new_order` events, in one transaction (the relay sees only rows);
    ``notify``: and wake the relays, as an order's commit does."""
    events_ = [new_order_event(name="Pen", price="1.00") for _ in range(count)]
    async with OrdersUnitOfWork(build_session_factory(relay_db)) as uow:
        for event in events_:
            await uow.outbox.add(event)
        if notify:
            await uow.outbox.notify_relays()
        await uow.commit()
    return [str(event.event_id) for event in events_]
