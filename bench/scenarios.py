"""The scenarios of `make bench` against a running stack: each API request direct to its
service and through the gateway, each alternated with the reference app's handler doing only
its core; the login storm; and the read scenarios over tables of growing size."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import redis

from bench import wrk
from bench.common import ORDER
from bench.compare import SCENARIO, Comparison, Measurement, alternate, p99
from bench.procs import Process, memory
from bench.wrk import Request, WrkResult
from tests.stack import REDIS_URL, Stack

PASSWORD = "bench-pass"  # noqa: S105 - the bench users' password, not a secret
ORDER_JSON = json.dumps(ORDER)
FORM = "application/x-www-form-urlencoded"
# argon2id runs a few hashes at a time per process (password_hash_concurrency): more
# connections than that only queue, and the run measures the queue.
LOGIN_CONNECTIONS = 8


@dataclass(frozen=True)
class Profile:
    name: str
    seconds: float  # one wrk run
    rounds: int  # A B rounds per comparison
    connections: int = 32
    # The scenarios that hold a database connection per request (cache miss, list, create,
    # patch) and their references: 8 a worker, within each worker's pool (10), so the stack's
    # and the reference app's pools together stay well within the database server's 100
    # connections, which every stack and test run on the box shares.
    db_connections: int = 16
    users: int = 8  # registered bench users
    orders_per_user: int = 4000  # bulk-loaded into the stack's orders database
    cached_pool: int = 2000  # ids read from the cache
    miss_pool: int = 6000  # ids read with the cache emptied first
    scale_rows: tuple[int, ...] = (1_000, 1_000_000)
    scale_pool: int = 1000  # ids per cache-miss round at every table size
    # Both sizes' APIs run at once, next to the stack: 16 connections (8 a worker) stay within
    # each worker's pool (10), so no size pays for opening overflow connections and the pools
    # together stay within the database server's max_connections (100 on this box, shared).
    scale_connections: int = 16
    storm_rate: float = 200.0  # cached GETs per second during the login storm
    storm_connections: int = 32
    pipeline_rates: tuple[int, ...] = (100, 200, 300, 400, 500, 600)
    pipeline_probe_seconds: float = 15.0
    pipeline_confirm_seconds: float = 60.0
    latency_rate: float = 100.0
    latency_seconds: float = 20.0
    warm_up_seconds: float = 2.0  # per endpoint, unrecorded; 0: none


@dataclass
class User:
    id: int
    email: str
    token: str


@dataclass
class Targets:
    """Where each kind of request goes: the orders and auth services direct, or the gateway."""

    orders: str
    auth: str


def flush_prefix(prefix: str) -> int:
    """Delete every Redis key under ``prefix`` (this run's own: cache entries, limits)."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=5000))
        for start in range(0, len(keys), 5000):
            client.delete(*keys[start : start + 5000])
        return len(keys)
    finally:
        client.close()


@dataclass
class Bench:
    profile: Profile
    stack: Stack
    workdir: Path
    reference_url: str = ""
    users: list[User] = field(default_factory=list)
    pools: dict[str, list[tuple[uuid.UUID, int]]] = field(default_factory=dict)
    patch_offset: int = 0
    scripts: int = 0
    # Session leaders of the processes whose memory is reported at the end.
    sessions: dict[str, int] = field(default_factory=dict)
    # The memory of the bench's own processes that stopped before the end (read as they stop).
    stopped_memory: list[dict[str, object]] = field(default_factory=list)

    # --- plumbing ---------------------------------------------------------------------------

    def load(
        self,
        base_url: str,
        requests: list[Request],
        *,
        mode: wrk.Mode = "random",
        rate: float | None = None,
        connections: int | None = None,
        seconds: float | None = None,
    ) -> WrkResult:
        self.scripts += 1
        script = wrk.write_script(
            self.workdir / f"load-{self.scripts}.lua", requests, mode=mode, rate=rate
        )
        return wrk.run(
            base_url,
            script,
            seconds=seconds or self.profile.seconds,
            connections=connections or self.profile.connections,
            mode=mode,
        )

    def stopping(self, process: Process) -> None:
        self.stopped_memory.extend(memory({process.name: process.proc.pid}))

    def memory(self) -> list[dict[str, object]]:
        """RSS of every process still running under ``sessions`` and of those read as they
        stopped, largest first."""
        rows = memory(self.sessions) + self.stopped_memory
        return sorted(rows, key=lambda row: -float(row["rss_mb"]))  # type: ignore[arg-type]

    def token_of(self, user_id: int) -> str:
        return next(u.token for u in self.users if u.id == user_id)

    @property
    def direct(self) -> Targets:
        env = self.stack.env
        return Targets(
            orders=f"http://127.0.0.1:{env['ORDERS_PORT']}",
            auth=f"http://127.0.0.1:{env['AUTH_PORT']}",
        )

    @property
    def gateway(self) -> Targets:
        return Targets(orders=self.stack.base_url, auth=self.stack.base_url)

    def register_users(self) -> None:
        with httpx.Client(base_url=self.stack.base_url, timeout=30) as client:
            for _ in range(self.profile.users):
                email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
                created = client.post("/register/", json={"email": email, "password": PASSWORD})
                created.raise_for_status()
                issued = client.post("/token/", data={"username": email, "password": PASSWORD})
                issued.raise_for_status()
                self.users.append(User(created.json()["id"], email, issued.json()["access_token"]))

    # --- requests ---------------------------------------------------------------------------

    def gets(self, pool: str) -> list[Request]:
        return [
            Request("GET", f"/orders/{oid}/", self.token_of(uid)) for oid, uid in self.pools[pool]
        ]

    def lists(self) -> list[Request]:
        return [Request("GET", f"/orders/user/{u.id}/", u.token) for u in self.users]

    def creates(self) -> list[Request]:
        return [Request("POST", "/orders/", u.token, ORDER_JSON) for u in self.users]

    def logins(self) -> list[Request]:
        return [
            Request("POST", "/token/", None, f"username={u.email}&password={PASSWORD}", FORM)
            for u in self.users
        ]

    def ref(self, path: str, *, token: bool = False, body: str | None = None) -> list[Request]:
        method = "GET" if body is None else "POST"
        if path == "/login":
            return [
                Request("POST", path, None, f"username={u.id}&password={PASSWORD}", FORM)
                for u in self.users
            ]
        if token:
            return [Request(method, path, u.token, body) for u in self.users]
        return [Request(method, path, None, body)]

    def reference(
        self, path: str, *, connections: int | None = None, **kwargs: object
    ) -> Callable[[], Measurement]:
        requests = self.ref(path, **kwargs)  # type: ignore[arg-type]
        return lambda: self.load(self.reference_url, requests, connections=connections)

    def warm_up(self) -> None:
        """A short unrecorded load on every endpoint first: pools filled, code paths warm,
        so the first scenario is not the one that pays for it."""
        seconds = self.profile.warm_up_seconds
        if seconds <= 0:
            return
        for base, requests in (
            (self.direct.orders, self.gets("cached")[:200]),
            (self.direct.orders, self.lists()),
            (self.direct.orders, self.creates()),
            (self.direct.auth, self.logins()),
            (self.gateway.orders, self.gets("cached")[:200]),
            (self.reference_url, self.ref("/jwt-redis", token=True)),
            (self.reference_url, self.ref("/select")),
            (self.reference_url, self.ref("/insert", body=ORDER_JSON)),
            (self.reference_url, self.ref("/login")),
        ):
            login = requests[0].content_type == FORM
            connections = LOGIN_CONNECTIONS if login else self.profile.db_connections
            self.load(base, requests, seconds=seconds, connections=connections)

    # --- the API scenarios ------------------------------------------------------------------

    def warm(self, base_url: str, pool: str) -> WrkResult:
        return self.load(base_url, self.gets(pool), mode="walk", seconds=120)

    def cache_prefix(self) -> str:
        return self.stack.env["ORDERS_REDIS_KEY_PREFIX"]

    def api_scenarios(
        self, where: str, targets: Targets, wait_drained: Callable[[], None]
    ) -> Iterator[Callable[[], Comparison]]:
        """Each comparison as a thunk, so that one that fails does not take the rest along."""
        rounds = self.profile.rounds
        db = self.profile.db_connections

        cached = self.gets("cached")

        def cached_get() -> Comparison:
            self.warm(self.direct.orders, "cached")  # the cache-miss rounds empty it
            return alternate(
                f"GET /orders/{{id}}/ cached, {where}",
                lambda: self.load(targets.orders, cached),
                {
                    "/redis": self.reference("/redis"),
                    "/jwt-redis": self.reference("/jwt-redis", token=True),
                },
                rounds,
            )

        yield cached_get

        misses = self.gets("miss")

        def miss() -> Measurement:
            flush_prefix(self.cache_prefix())
            return self.load(targets.orders, misses, mode="walk", connections=db)

        yield lambda: alternate(
            f"GET /orders/{{id}}/ cache miss, {where}",
            miss,
            {"/select": self.reference("/select", connections=db)},
            rounds,
        )

        lists = self.lists()
        yield lambda: alternate(
            f"GET /orders/user/{{id}}/ first page, {where}",
            lambda: self.load(targets.orders, lists, connections=db),
            {"/select": self.reference("/select", connections=db)},
            rounds,
        )

        creates = self.creates()

        def create() -> Measurement:
            result = self.load(targets.orders, creates, connections=db)
            wait_drained()  # the reference must not share the box with this round's backlog
            return result

        yield lambda: alternate(
            f"POST /orders/, {where}",
            create,
            {"/insert": self.reference("/insert", body=ORDER_JSON, connections=db)},
            rounds,
        )

        yield lambda: alternate(
            f"PATCH /orders/{{id}}/ PENDING->PAID, {where}",
            lambda: self.patch(targets.orders),
            {"/insert": self.reference("/insert", body=ORDER_JSON, connections=db)},
            rounds,
        )

        logins = self.logins()
        yield lambda: alternate(
            f"POST /token/, {where}",
            lambda: self.load(targets.auth, logins, connections=LOGIN_CONNECTIONS),
            {"/login": self.reference("/login", connections=LOGIN_CONNECTIONS)},
            rounds,
        )

    def patch(self, base_url: str) -> WrkResult:
        """Each PATCH moves an order that is still PENDING: every request is a real change."""
        pool = self.pools["patch"][self.patch_offset :]
        if not pool:
            raise RuntimeError("the pool of PENDING orders ran out; raise orders_per_user")
        body = json.dumps({"status": "PAID"})
        requests = [
            Request("PATCH", f"/orders/{oid}/", self.token_of(uid), body) for oid, uid in pool
        ]
        result = self.load(base_url, requests, mode="walk", connections=self.profile.db_connections)
        # Past the answered ones, requests may have been sent when wrk stopped: skip as many
        # as there are connections, so the next round's PATCHes are real changes too.
        self.patch_offset += result.requests + self.profile.db_connections
        return result

    # --- the login storm --------------------------------------------------------------------

    def login_storm(self, capacity: float | None = None) -> Comparison:
        """Cached GETs through the gateway at a steady rate, alone and with token requests
        hammering auth at the same time; compared on the GETs' p99.

        The rate is the profile's, or half the GETs' ``capacity`` (req/s at full load in this
        run) if that is less: above the capacity both runs measure a queue, not the storm."""
        gets = self.gets("cached")
        logins = self.logins()
        p = self.profile
        rate = p.storm_rate if not capacity else max(10.0, min(p.storm_rate, capacity / 2))

        def steady() -> WrkResult:
            return self.load(self.gateway.orders, gets, rate=rate, connections=p.storm_connections)

        def storm() -> Measurement:
            storm_result: list[WrkResult] = []
            thread = threading.Thread(
                target=lambda: storm_result.append(
                    self.load(
                        self.gateway.auth,
                        logins,
                        seconds=p.seconds + 1,
                        connections=LOGIN_CONNECTIONS,
                    )
                )
            )
            thread.start()
            time.sleep(0.5)  # the storm is on before the GETs start
            measured = steady()
            thread.join()
            errors = dict(measured.errors)
            for key, value in storm_result[0].errors.items():
                errors[f"storm_{key}"] = value
            return replace(measured, errors=errors)

        self.warm(self.direct.orders, "cached")
        comparison = alternate(
            "login storm: cached GET p99 (gateway)", storm, {"alone": steady}, p.rounds, p99
        )
        comparison.note = (
            f"{rate:.0f} cached GETs/s; with: POST /token/ on {LOGIN_CONNECTIONS} "
            "connections at the same time; ratio = p99 with / p99 alone"
        )
        return comparison


def median_p99_ratio(comparison: Comparison) -> float:
    return comparison.ratio(comparison.references[0], p99)


__all__ = ["SCENARIO", "Bench", "Profile", "Targets", "flush_prefix", "median_p99_ratio"]
