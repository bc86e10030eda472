"""Alembic glue shared by every service: each service keeps its own history (its
``migrations`` package), and both its ``env.py`` and its ``migrate`` command call in here."""

from __future__ import annotations

import asyncio

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from order_common.dbadmin import ensure_database


def alembic_config(script_location: str, database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", script_location)
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(
    script_location: str,
    database_url: str,
    revision: str = "head",
    *,
    create_database: bool = True,
) -> None:
    """Migrate the database, creating it first when ``create_database`` (that step connects to
    the ``postgres`` maintenance database; without it only ``database_url``'s own database is
    connected to). Runs its own event loop: call it from synchronous code (a CLI, a test
    session fixture), not from inside a running loop."""
    if create_database:
        asyncio.run(ensure_database(database_url))
    command.upgrade(alembic_config(script_location, database_url), revision)


def run_env(target_metadata: MetaData) -> None:
    """The body of a service's ``env.py``."""
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set; run migrations through the service CLI")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def _migrate(connection: Connection) -> None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()

    async def _run() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as connection:
            await connection.run_sync(_migrate)
        await engine.dispose()

    asyncio.run(_run())
