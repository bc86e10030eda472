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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import jwt
from order_testing import free_port

from auth_service.keys import load_signing_key
from auth_service.settings import Settings as AuthSettings
from bench import data
from bench.compare import Comparison, Measurement, alternate
from bench.procs import orders_api, started
from bench.scenarios import Bench, flush_prefix
from bench.wrk import Request
from order_common.jwt import ALGORITHM

READERS = 200  # filler users whose tokens the readers hold


@dataclass
class Table:
    rows: int
    url: str
    prefix: str
    tokens: dict[int, str]
    pool: list[Request]  # GETs of orders spread over the table
    api_url: str = ""  # while its API serves (``serving``)

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


def prepare(bench: Bench, rows: int, template: str, resources: ExitStack) -> Table:
    """A bench database of ``rows`` orders, copied from the migrated ``template`` and
    bulk-loaded, with tokens of its readers and a pool of GETs over it."""
    run_id = bench.stack.run_id
    url = data.bench_database_url(f"bench_{run_id}_{rows}")
    data.clone(template, url)
    resources.callback(data.drop, url)
    table = data.scale_table(rows)
    data.load_scale(url, table)
    mint = _minter(bench)
    readers = [data.USER_BASE + i for i in range(min(READERS, table.users))]
    if table.heavy_orders:
        readers.append(data.HEAVY_USER)
    tokens = {user: mint(user) for user in readers}
    sample = data.sample_orders(url, readers[:READERS], bench.profile.scale_pool)
    pool = [Request("GET", f"/orders/{oid}/", tokens[uid]) for oid, uid in sample]
    return Table(rows, url, f"test:{run_id}:scale{rows}", tokens, pool)


@contextmanager
def serving(bench: Bench, *tables: Table) -> Iterator[None]:
    """An `orders-service serve` per table (the stack's settings and worker count, its own
    database and Redis prefix), all started at once; each one's memory is read before it
    stops. Only the sizes being compared run, so their connection pools (up to pool size +
    overflow per worker) never add up past the server's ``max_connections``."""
    specs = []
    for table in tables:
        env = {
            **bench.stack.env,
            "ORDERS_DATABASE_URL": table.url,
            "ORDERS_REDIS_KEY_PREFIX": table.prefix,
        }
        log = bench.workdir / f"orders-{table.rows}.log"
        specs.append(orders_api(f"orders over {table.label}", env, free_port(), log))
    with started(*specs, on_stop=bench.stopping) as processes:
        for table, process in zip(tables, processes, strict=True):
            table.api_url = process.url
        try:
            yield
        finally:
            for table in tables:
                table.api_url = ""


def comparisons(bench: Bench, small: Table, big: Table) -> Iterator[Callable[[], Comparison]]:
    """Each comparison as a thunk (see ``Bench.api_scenarios``); both tables' APIs serve."""
    rounds = bench.profile.rounds
    label = f"{big.label} vs {small.label}"
    connections = bench.profile.scale_connections

    def cached(table: Table) -> Measurement:
        return bench.load(table.api_url, table.pool, connections=connections)

    def miss(table: Table) -> Measurement:
        flush_prefix(table.prefix)
        return bench.load(table.api_url, table.pool, mode="walk", connections=connections)

    def listing(table: Table, user: int) -> Measurement:
        path = f"/orders/user/{user}/"
        requests = [Request("GET", path, table.tokens[user])]
        return bench.load(table.api_url, requests, connections=connections)

    def cached_get() -> Comparison:
        for table in (small, big):  # warm the cache
            bench.load(table.api_url, table.pool, mode="walk", seconds=120, connections=connections)
        return alternate(
            f"scale: cached GET, {label}",
            lambda: cached(big),
            {small.label: lambda: cached(small)},
            rounds,
        )

    yield cached_get
    yield lambda: alternate(
        f"scale: cache-miss GET, {label}",
        lambda: miss(big),
        {small.label: lambda: miss(small)},
        rounds,
    )
    user = data.USER_BASE  # a hundred orders at every size
    yield lambda: alternate(
        f"scale: list first page, {label}",
        lambda: listing(big, user),
        {small.label: lambda: listing(small, user)},
        rounds,
    )
    if data.HEAVY_USER in big.tokens:
        yield lambda: alternate(
            f"scale: list first page of a user with 100K orders, {label}",
            lambda: listing(big, data.HEAVY_USER),
            {small.label: lambda: listing(small, user)},
            rounds,
        )
