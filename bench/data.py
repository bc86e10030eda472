"""Orders for the benchmark, bulk-loaded straight into a database with ``generate_series``
(one INSERT ... SELECT: a million rows in seconds, not an HTTP request each), migrated by
``orders-service migrate`` like the real one, and the bench databases' life cycle."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import make_url

from bench.common import ORDER
from order_common.db import asyncpg_dsn
from order_common.dbadmin import drop_database, ensure_database
from tests.stack import BIN, PG, ROOT

ITEMS = ORDER["items"]
TOTAL = ORDER["total_price"]
# Filler users of the scale tables start here, far from the ids auth hands out in a run.
USER_BASE = 1_000_000
HEAVY_USER = USER_BASE - 1
ORDERS_PER_USER = 100


def bench_database_url(name: str) -> str:
    return f"{PG}/{name}"


def migrate(database_url: str) -> None:
    """A bench database gets the orders tables exactly as the service migrates them."""
    asyncio.run(ensure_database(database_url))
    env = {**os.environ, "ORDERS_DATABASE_URL": database_url}
    done = subprocess.run(
        [BIN / "orders-service", "migrate"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"migrating {database_url} failed:\n{done.stdout}{done.stderr}")


def drop(database_url: str) -> None:
    asyncio.run(drop_database(database_url))


def clone(template_url: str, database_url: str) -> None:
    """A copy of a migrated database (``CREATE DATABASE ... TEMPLATE``): a file copy, where
    running the migrations again costs a Python start and Alembic each time (~4 s)."""

    async def create() -> None:
        admin = make_url(template_url).set(drivername="postgresql", database="postgres")
        template, name = make_url(template_url).database, make_url(database_url).database
        connection = await asyncpg.connect(admin.render_as_string(hide_password=False))
        try:
            await connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            await connection.close()

    asyncio.run(create())


_INSERT = """
INSERT INTO orders (id, user_id, items, total_price, status, created_at, updated_at)
SELECT gen_random_uuid(), {user}, $1::jsonb, $2::numeric, 'PENDING', t, t
FROM (
    SELECT g, now() - make_interval(secs => g::double precision / 100) AS t
    FROM generate_series($3::bigint, $4::bigint) AS g
) AS s
"""


async def _execute(database_url: str, statements: list[tuple[str, tuple[object, ...]]]) -> None:
    """Run the loading statements with the table's indexes (the primary key included) set
    aside and rebuilt after, from their own definitions: one sort per index instead of a
    random B-tree insertion per row."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute("SET synchronous_commit = off")
        await connection.execute("SET maintenance_work_mem = '256MB'")
        constraints = await connection.fetch(
            "SELECT conname, pg_get_constraintdef(oid) AS definition FROM pg_constraint "
            "WHERE conrelid = 'orders'::regclass AND contype IN ('p', 'u')"
        )
        indexes = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = 'orders' AND NOT indexname = ANY($1::text[])",
            [c["conname"] for c in constraints],
        )
        for index in indexes:
            await connection.execute(f'DROP INDEX "{index["indexname"]}"')
        for constraint in constraints:
            await connection.execute(
                f'ALTER TABLE orders DROP CONSTRAINT "{constraint["conname"]}"'
            )
        for sql, args in statements:
            await connection.execute(sql, *args)
        for constraint in constraints:
            await connection.execute(
                f'ALTER TABLE orders ADD CONSTRAINT "{constraint["conname"]}" '
                f"{constraint['definition']}"
            )
        for index in indexes:
            await connection.execute(index["indexdef"])
        await connection.execute("VACUUM ANALYZE orders")
    finally:
        await connection.close()


def _items() -> str:
    import json

    return json.dumps(ITEMS)


def load_for_users(database_url: str, user_ids: list[int], per_user: int) -> None:
    """``per_user`` PENDING orders for each of ``user_ids``, interleaved in the table."""
    count = len(user_ids) * per_user
    sql = _INSERT.format(user=f"(ARRAY{user_ids}::bigint[])[1 + g % {len(user_ids)}]")
    asyncio.run(_execute(database_url, [(sql, (_items(), TOTAL, 0, count - 1))]))


@dataclass(frozen=True)
class ScaleTable:
    rows: int
    users: int  # filler users USER_BASE .. USER_BASE + users - 1, ORDERS_PER_USER each
    heavy_orders: int  # orders of HEAVY_USER (part of ``rows``)


def scale_table(rows: int, heavy_orders: int = 100_000) -> ScaleTable:
    heavy = heavy_orders if rows >= 10 * heavy_orders else 0
    return ScaleTable(
        rows=rows, users=max(1, (rows - heavy) // ORDERS_PER_USER), heavy_orders=heavy
    )


def load_scale(database_url: str, table: ScaleTable, *, chunk: int = 1_000_000) -> None:
    """``table.rows`` orders over many users (and one heavy user), in chunks of one
    statement each so no single transaction grows without bound."""
    filler = table.rows - table.heavy_orders
    statements: list[tuple[str, tuple[object, ...]]] = []
    spread = _INSERT.format(user=f"{USER_BASE} + g % {table.users}")
    for start in range(0, filler, chunk):
        statements.append((spread, (_items(), TOTAL, start, min(filler, start + chunk) - 1)))
    if table.heavy_orders:
        heavy = _INSERT.format(user=str(HEAVY_USER))
        statements.append((heavy, (_items(), TOTAL, 0, table.heavy_orders - 1)))
    asyncio.run(_execute(database_url, statements))


async def _fetch(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return list(await connection.fetch(sql, *args))
    finally:
        await connection.close()


def sample_orders(
    database_url: str, user_ids: list[int], count: int, *, status: str | None = None
) -> list[tuple[uuid.UUID, int]]:
    """Up to ``count`` (order id, owner) pairs of the given users, in random order."""
    sql = "SELECT id, user_id FROM orders WHERE user_id = ANY($1::bigint[])"
    args: list[object] = [user_ids]
    if status is not None:
        sql += " AND status = $3"
        args.append(status)
    sql = sql + " ORDER BY random() LIMIT $2"
    rows = asyncio.run(_fetch(database_url, sql, user_ids, count, *args[1:]))
    return [(row["id"], row["user_id"]) for row in rows]


def count_rows(database_url: str) -> int:
    rows = asyncio.run(_fetch(database_url, "SELECT count(*) AS n FROM orders"))
    return int(rows[0]["n"])


def free_connections() -> int:
    """Connections the PostgreSQL server can still accept (``max_connections`` less those
    open, superuser reserve included): shared by every stack and test run on the box, and
    each API worker's pool may hold pool size + overflow of them."""
    sql = (
        "SELECT current_setting('max_connections')::int "
        "- current_setting('superuser_reserved_connections')::int "
        "- (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS n"
    )
    rows = asyncio.run(_fetch(bench_database_url("postgres"), sql))
    return int(rows[0]["n"])


class Headroom:
    """Waits, before a comparison, until the shared PostgreSQL server has connections to
    spare: other stacks and test runs on the box come and go, and a run that starts while
    they hold the last slots fails for them, not for us. Up to ``first`` seconds before a
    first attempt and ``retry`` before a second, within ``budget`` seconds for the whole run
    (so `make bench` stays within its time)."""

    def __init__(
        self, need: int = 8, first: float = 15, retry: float = 90, budget: float = 240
    ) -> None:
        self.need, self.first, self.retry, self.budget = need, first, retry, budget

    def wait(self, *, retry: bool = False) -> tuple[float, int | None]:
        start = time.monotonic()
        limit = min(self.retry if retry else self.first, self.budget)
        while True:
            free = self.free()
            waited = time.monotonic() - start
            if (free is not None and free >= self.need) or waited >= limit:
                self.budget -= waited
                if waited >= 1:
                    print(f"  waited {waited:.0f} s for free database connections", flush=True)
                return waited, free
            time.sleep(3)

    @staticmethod
    def free() -> int | None:
        try:
            return free_connections()
        except Exception:  # the server has none left for us even to ask
            return 0
