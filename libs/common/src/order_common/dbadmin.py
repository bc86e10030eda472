"""Creating and dropping databases: used by `migrate` commands and by tests that need their own."""

from __future__ import annotations

import re

import asyncpg
from sqlalchemy.engine import make_url

from order_common.db import asyncpg_dsn

_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _admin_dsn(database_url: str) -> tuple[str, str]:
    url = make_url(database_url)
    name = url.database or ""
    if not _SAFE_NAME.match(name):
        raise ValueError(f"refusing unusual database name {name!r}")
    return asyncpg_dsn(database_url, database="postgres"), name


async def ensure_database(database_url: str) -> bool:
    """Create the database named in ``database_url`` if missing. Returns True if it created it."""
    dsn, name = _admin_dsn(database_url)
    conn = await asyncpg.connect(dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        await conn.execute(f'CREATE DATABASE "{name}"')
        return True
    finally:
        await conn.close()


async def drop_database(database_url: str) -> None:
    dsn, name = _admin_dsn(database_url)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
