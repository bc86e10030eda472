"""`auth-service migrate` with a restricted role: with AUTH_MIGRATE_CREATE_DATABASE=false it
connects only to its own database (managed PostgreSQL and CloudNativePG do not let the
application role into `postgres`), and it refuses to invent a database that is not there."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from auth_service import cli

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
def restricted_database() -> Iterator[tuple[str, str]]:
    """A role that may not create databases, owning a database of its own (CloudNativePG's
    `app` shape). Yields (role, database)."""
    suffix = secrets.token_hex(5)
    role, database = f"auth_mig_{suffix}", f"auth_mig_{suffix}"
    asyncio.run(
        _admin(
            f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE',
            f'CREATE DATABASE "{database}" OWNER "{role}"',
        )
    )
    try:
        yield role, database
    finally:
        asyncio.run(
            _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)', f'DROP ROLE "{role}"')
        )


@pytest.fixture
def connected_databases(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every database asyncpg connects to, whoever asks (SQLAlchemy's dialect or dbadmin)."""
    seen: list[str] = []
    real_connect = asyncpg.connect

    async def spy(dsn: str | None = None, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("database") or make_url(dsn or "").database or "")
        return await real_connect(dsn, *args, **kwargs)

    monkeypatch.setattr(asyncpg, "connect", spy)
    return seen


async def _tables(role: str, database: str) -> set[str]:
    conn = await asyncpg.connect(f"postgresql://{role}@127.0.0.1:5432/{database}")
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


def test_migrate_without_create_step_connects_only_to_its_own_database(
    restricted_database: tuple[str, str],
    connected_databases: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    role, database = restricted_database
    # The URL as CloudNativePG's `uri` key gives it: plain postgresql://.
    monkeypatch.setenv("AUTH_DATABASE_URL", f"postgresql://{role}@127.0.0.1:5432/{database}")
    monkeypatch.setenv("AUTH_MIGRATE_CREATE_DATABASE", "false")

    assert cli.main(["migrate"]) == 0

    assert connected_databases
    assert set(connected_databases) == {database}
    assert {"users", "alembic_version"} <= asyncio.run(_tables(role, database))
    # Running it again (every `helm upgrade`) is a no-op.
    assert cli.main(["migrate"]) == 0


def test_create_step_is_what_visits_the_maintenance_database(
    restricted_database: tuple[str, str],
    connected_databases: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    role, database = restricted_database
    monkeypatch.setenv("AUTH_DATABASE_URL", f"postgresql://{role}@127.0.0.1:5432/{database}")
    monkeypatch.delenv("AUTH_MIGRATE_CREATE_DATABASE", raising=False)

    assert cli.main(["migrate"]) == 0

    assert connected_databases[0] == "postgres"
    assert set(connected_databases) == {"postgres", database}


def test_migrate_without_create_step_refuses_a_missing_database(
    connected_databases: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = f"auth_missing_{secrets.token_hex(5)}"
    monkeypatch.setenv("AUTH_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/{missing}")
    monkeypatch.setenv("AUTH_MIGRATE_CREATE_DATABASE", "false")

    with pytest.raises(DBAPIError, match=f'database "{missing}" does not exist'):
        cli.main(["migrate"])

    assert set(connected_databases) == {missing}
