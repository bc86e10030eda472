"""Real PostgreSQL and Redis, isolated per run: a freshly migrated `auth_test_<hex>` database
and Redis keys under `test:<hex>:`, both removed at the end. Each test gets its own key prefix,
so rate-limit counters never leak between tests."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI

from auth_service.keys import write_new_private_key
from auth_service.main import create_app
from auth_service.settings import Settings
from order_common.dbadmin import drop_database
from order_common.logging import configure_logging
from order_common.migrations import upgrade

POSTGRES_SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"
BASE_URL = "http://auth.test"

StartApp = Callable[[Settings], Awaitable[FastAPI]]
OpenClient = Callable[..., Awaitable[httpx.AsyncClient]]


def _in_own_thread(func: Callable[[], Any]) -> Any:
    # upgrade() and asyncio.run() make their own event loop: keep it away from the test loop.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(func).result()


@pytest.fixture(scope="session")
def run_id() -> str:
    return secrets.token_hex(6)


@pytest.fixture(scope="session")
def database_url(run_id: str) -> Iterator[str]:
    url = f"{POSTGRES_SERVER}/auth_test_{run_id}"
    _in_own_thread(lambda: upgrade("auth_service:migrations", url))
    yield url
    _in_own_thread(lambda: asyncio.run(drop_database(url)))


@pytest.fixture(scope="session")
def redis_namespace(run_id: str) -> Iterator[str]:
    namespace = f"test:{run_id}"
    yield namespace
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def private_key_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "jwt-private.pem"
    write_new_private_key(path, bits=2048)
    return path


@pytest.fixture
def make_settings(
    database_url: str, redis_namespace: str, private_key_path: Path
) -> Callable[..., Settings]:
    prefix = f"{redis_namespace}:{secrets.token_hex(4)}:auth"

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": database_url,
            "redis_url": REDIS_URL,
            "redis_key_prefix": prefix,
            "jwt_private_key_path": private_key_path,
            # Cheap hashes keep the suite fast; production cost is in the defaults.
            "password_hash_time_cost": 1,
            "password_hash_memory_kib": 1024,
            "password_hash_parallelism": 1,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
async def start_app() -> AsyncIterator[StartApp]:
    """Build an app and run its lifespan until the test ends."""
    async with AsyncExitStack() as stack:

        async def start(settings: Settings) -> FastAPI:
            # As `auth-service serve` does in each worker (order_common.serve.serving_app).
            configure_logging(settings.service_name, settings.log_level)
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            return app

        yield start


@pytest.fixture
async def open_client() -> AsyncIterator[OpenClient]:
    """A client for an app, seen by it as coming from ``ip``."""
    async with AsyncExitStack() as stack:

        async def open_(app: FastAPI, ip: str = "203.0.113.10") -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=app, client=(ip, 40000))
            client = httpx.AsyncClient(transport=transport, base_url=BASE_URL)
            return await stack.enter_async_context(client)

        yield open_


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def app(settings: Settings, start_app: StartApp) -> FastAPI:
    return await start_app(settings)


@pytest.fixture
async def client(app: FastAPI, open_client: OpenClient) -> httpx.AsyncClient:
    return await open_client(app)


@pytest.fixture
def new_email() -> Callable[[], str]:
    return lambda: f"user-{secrets.token_hex(6)}@example.com"
