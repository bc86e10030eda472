"""The bench's backlog counter against a real PostgreSQL: one connection for a whole drain wait
(a connection per poll once used up the server's slots mid-run), and the clones of a migrated
database the bench reads from."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from bench import data
from bench.pipeline import Backlog
from order_common.db import asyncpg_dsn


@pytest.fixture(scope="module")
def orders_db() -> Iterator[str]:
    url = data.bench_database_url(f"test_bench_{uuid.uuid4().hex[:10]}")
    data.migrate(url)
    try:
        yield url
    finally:
        data.drop(url)


def _connections(url: str) -> int:
    async def count() -> int:
        connection = await asyncpg.connect(asyncpg_dsn(data.bench_database_url("postgres")))
        try:
            name = url.rsplit("/", 1)[1]
            return int(
                await connection.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
                )
            )
        finally:
            await connection.close()

    return asyncio.run(count())


def _execute(url: str, sql: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await connection.execute(sql)
        finally:
            await connection.close()

    asyncio.run(run())


def test_backlog_counts_unprocessed_orders_over_one_connection(orders_db: str) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    data.load_for_users(orders_db, [7], 3)
    _execute(orders_db, "UPDATE orders SET created_at = now()")

    with Backlog(asyncpg_dsn(orders_db)) as backlog:
        assert backlog.count(since) == 3
        for _ in range(20):
            backlog.count(since)
        assert _connections(orders_db) == 1
        # Not drained: the wait gives up at its timeout instead of hanging.
        assert backlog.wait_drained(since, timeout=0.6) >= 0.6
        _execute(orders_db, "UPDATE orders SET processed_at = now()")
        assert backlog.wait_drained(since) < 0.5
        assert backlog.count(datetime.now(UTC) + timedelta(hours=1)) == 0
    assert _connections(orders_db) == 0


def test_a_clone_of_a_migrated_database_has_its_tables(orders_db: str) -> None:
    copy = data.bench_database_url(f"test_bench_{uuid.uuid4().hex[:10]}")
    before = data.count_rows(orders_db)
    data.clone(orders_db, copy)
    try:
        data.load_for_users(copy, [1, 2], 5)
        assert data.count_rows(copy) == before + 10  # a copy, rows and all
        assert data.count_rows(orders_db) == before
        assert len(data.sample_orders(copy, [2], 100)) == 5
    finally:
        data.drop(copy)
