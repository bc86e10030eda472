"""An unreachable dependency is a 503 with Retry-After that names it, never a 500; a real bug
stays a 500. The exceptions are the ones the drivers really raise."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI
from sqlalchemy import text

from order_common.db import build_engine
from order_common.http import SlashAgnosticRouter, install_middleware
from order_common.http_errors import install_error_handlers, unavailable_dependency
from order_common.settings import ApiSettings

REFUSED_PG = "postgresql+asyncpg://postgres@127.0.0.1:1/nothing"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers: a database that hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


def app(database_url: str, *, connect_timeout: float = 5.0) -> FastAPI:
    application = FastAPI()
    router = SlashAgnosticRouter()
    engine = build_engine(database_url, connect_timeout=connect_timeout)
    cache = redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)

    @router.get("/db")
    async def db() -> int:
        async with engine.connect() as connection:
            return int((await connection.execute(text("SELECT 1"))).scalar_one())

    @router.get("/redis")
    async def needs_redis() -> None:
        await cache.get("x")

    @router.get("/bug")
    async def bug() -> None:
        raise OSError("a file that is not there")  # an OSError that is no dependency's

    application.include_router(router)
    install_error_handlers(application)
    install_middleware(application, ApiSettings(_env_file=None))  # type: ignore[call-arg]
    return application


def client(application: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t")


async def test_a_refused_database_is_a_503_with_retry_after() -> None:
    async with client(app(REFUSED_PG)) as http:
        response = await http.get("/db")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json() == {"detail": "the database is unavailable; retry in a few seconds"}


async def test_a_database_that_hangs_is_a_503_within_the_connect_timeout(
    silent_server: int,
) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{silent_server}/nothing"
    async with client(app(url, connect_timeout=0.5)) as http:
        started = time.monotonic()
        response = await http.get("/db")
        elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert "database" in response.json()["detail"]
    assert elapsed < 5


async def test_an_unreachable_redis_is_a_503_naming_redis() -> None:
    async with client(app(REFUSED_PG)) as http:
        response = await http.get("/redis")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the redis is unavailable")


async def test_an_oserror_of_our_own_stays_a_500() -> None:
    async with client(app(REFUSED_PG)) as http:
        response = await http.get("/bug")
    assert response.status_code == 500
    assert response.json() == {"detail": "internal server error"}


async def test_a_connection_lost_mid_statement_is_the_database_unavailable() -> None:
    """What a request sees when PostgreSQL is stopped under it: the server ends the session."""
    import asyncpg

    engine = build_engine("postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    try:
        async with engine.connect() as victim, engine.connect() as killer:
            pid = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            await asyncio.sleep(0.2)
            with pytest.raises(Exception) as caught:  # noqa: PT011 - any driver error will do
                await victim.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert unavailable_dependency(caught.value) == "database", repr(caught.value)
    assert not isinstance(caught.value, asyncpg.UniqueViolationError)


def test_a_constraint_violation_is_not_an_outage() -> None:
    import asyncpg
    import sqlalchemy.exc

    orig = asyncpg.UniqueViolationError("duplicate key")
    error = sqlalchemy.exc.IntegrityError("INSERT", {}, orig)
    assert unavailable_dependency(error) is None
