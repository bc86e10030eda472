"""Scale: the read scenarios with the orders table at 1 thousand rows and at 1 million (10
million in `make bench-full`). Each size is its own bench database, bulk-loaded, with its own
`orders-service serve` (same settings and worker count as the stack's) on its own Redis prefix;
the sizes are alternated round by round like a scenario and its reference.

The readers hold tokens signed with the stack's own signing key, with the claims auth puts in,
so that orders can belong to many users (a hundred each) without registering each of them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import jwt

from auth_service.keys import load_signing_key
from auth_service.settings import Settings as AuthSettings
from bench import data
from bench.compare import Comparison, Measurement, alternate
from bench.procs import orders_api
from bench.scenarios import Bench, flush_prefix
from bench.wrk import Request
from order_common.jwt import ALGORITHM
from tests.stack import free_port

READERS = 200  # filler users whose tokens the readers hold


@dataclass
class Table:
    rows: int
    url: str
    api_url: str
    prefix: str
    tokens: dict[int, str]
    pool: list[Request]  # GETs of orders spread over the table

    @property
    def label(self) -> str:
        return f"{self.rows:,} rows"


def _minter(bench: Bench) -> Callable[[int], str]:
    """Tokens as auth issues them (its claims, its key and kid), for any user id."""
    key = load_signing_key(Path(bench.stack.env["AUTH_JWT_PRIVATE_KEY_PATH"]))
    auth = AuthSettings()

    def mint(user_id: int) -> str:
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "iss": auth.jwt_issuer,
            "aud": auth.jwt_audience,
            "iat": now,
            "exp": now + 6 * 3600,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})

    return mint


def prepare(bench: Bench, rows: int, resources: ExitStack) -> Table:
    run_id = bench.stack.run_id
    url = data.bench_database_url(f"bench_{run_id}_{rows}")
    resources.callback(data.drop, url)
    data.migrate(url)
    table = data.scale_table(rows)
    data.load_scale(url, table)
    mint = _minter(bench)
    readers = [data.USER_BASE + i for i in range(min(READERS, table.users))]
    if table.heavy_orders:
        readers.append(data.HEAVY_USER)
    tokens = {user: mint(user) for user in readers}
    sample = data.sample_orders(url, readers[:READERS], bench.profile.scale_pool)
    prefix = f"test:{run_id}:scale{rows}"
    port = free_port()
    env = {**bench.stack.env, "ORDERS_DATABASE_URL": url, "ORDERS_REDIS_KEY_PREFIX": prefix}
    log = bench.workdir / f"orders-{rows}.log"
    api = resources.enter_context(orders_api(f"orders over {rows:,} rows", env, port, log))
    bench.sessions[api.name] = api.proc.pid
    pool = [Request("GET", f"/orders/{oid}/", tokens[uid]) for oid, uid in sample]
    return Table(rows, url, api.url, prefix, tokens, pool)


def comparisons(bench: Bench, small: Table, big: Table) -> Iterator[Comparison]:
    rounds = bench.profile.rounds
    label = f"{big.label} vs {small.label}"

    def cached(table: Table) -> Measurement:
        return bench.load(table.api_url, table.pool)

    def miss(table: Table) -> Measurement:
        flush_prefix(table.prefix)
        return bench.load(table.api_url, table.pool, mode="walk")

    def listing(table: Table, user: int) -> Measurement:
        path = f"/orders/user/{user}/"
        return bench.load(table.api_url, [Request("GET", path, table.tokens[user])])

    for table in (small, big):
        bench.load(table.api_url, table.pool, mode="walk", seconds=120)  # warm the cache
    yield (
        alternate(
            f"scale: cached GET, {label}",
            lambda: cached(big),
            {small.label: lambda: cached(small)},
            rounds,
        )
    )
    yield (
        alternate(
            f"scale: cache-miss GET, {label}",
            lambda: miss(big),
            {small.label: lambda: miss(small)},
            rounds,
        )
    )
    user = data.USER_BASE  # a hundred orders at every size
    yield (
        alternate(
            f"scale: list first page, {label}",
            lambda: listing(big, user),
            {small.label: lambda: listing(small, user)},
            rounds,
        )
    )
    if data.HEAVY_USER in big.tokens:
        yield (
            alternate(
                f"scale: list first page of a user with 100K orders, {label}",
                lambda: listing(big, data.HEAVY_USER),
                {small.label: lambda: listing(small, user)},
                rounds,
            )
        )
