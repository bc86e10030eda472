"""``asyncpg_dsn``: what a SQLAlchemy URL becomes for a direct asyncpg connection, checked
against the real PostgreSQL (asyncpg sends unknown query parameters to the server as
settings, which refuses them)."""

from __future__ import annotations

import asyncpg
import pytest

from order_common.db import asyncpg_dsn

SERVER = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


@pytest.mark.parametrize(
    ("url", "dsn"),
    [
        (SERVER, "postgresql://postgres@127.0.0.1:5432/postgres"),
        (
            f"{SERVER}?prepared_statement_cache_size=0&application_name=relay",
            "postgresql://postgres@127.0.0.1:5432/postgres?application_name=relay",
        ),
        (f"{SERVER}?ssl=require", "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=require"),
        (f"{SERVER}?ssl=false", "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
        (
            f"{SERVER}?ssl=true&sslmode=verify-full",
            "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=verify-full",
        ),
        (
            "postgresql+asyncpg://app:s%40cret@db:5432/orders?async_fallback=true",
            "postgresql://app:s%40cret@db:5432/orders",
        ),
    ],
    ids=["plain", "dialect-option", "ssl", "ssl-false", "sslmode-wins", "password-kept"],
)
def test_the_dsn_keeps_what_libpq_reads_and_drops_what_only_sqlalchemy_does(
    url: str, dsn: str
) -> None:
    assert asyncpg_dsn(url) == dsn


async def test_asyncpg_connects_with_the_dsn_of_a_url_carrying_sqlalchemy_options() -> None:
    url = f"{SERVER}?prepared_statement_cache_size=0&ssl=disable&application_name=dsn-test"
    connection = await asyncpg.connect(asyncpg_dsn(url), timeout=5)
    try:
        assert await connection.fetchval("SHOW application_name") == "dsn-test"
    finally:
        await connection.close()


async def test_database_replaces_the_urls_own() -> None:
    assert asyncpg_dsn(f"{SERVER}?ssl=disable", database="orders").endswith(
        "/orders?sslmode=disable"
    )
