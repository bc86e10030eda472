"""Faults under a steady stream of orders through the gateway (~10/s): every case ends with no
order lost and none processed twice, and nothing answers 5xx but a 503 with a clear message
and ``Retry-After`` that is the fault's own direct consequence.

Each case: a second of normal traffic, the fault for ``CHAOS_FAULT_SECONDS`` (or, for a signal,
the signal and that long of traffic after it), traffic until a request sent after the fault's
end succeeded, then the pipeline drains and ``tests.chaos.load.count`` counts. The table is
printed at the end (tests/chaos/conftest.py)."""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from tests.chaos.conftest import FAULT_SECONDS, Chaos
from tests.chaos.load import OrderStream, Tally, count, recovery_time

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.timeout(600)]

LEAD_SECONDS = 0.5
DB_DOWN = "the database is unavailable; retry in a few seconds"
GATEWAY_DOWN = "service temporarily unavailable, retry shortly"  # gateway/nginx.conf.template


@dataclass
class Case:
    name: str
    inject: Callable[[Chaos], None]
    lift: Callable[[Chaos], None] | None = None  # None: the fault is the moment of inject
    during: Callable[[Chaos], None] | None = None  # checks while the fault lasts
    allowed_503: frozenset[str] = frozenset()
    allowed_no_answer: frozenset[str] = frozenset()
    restarts: str | None = None  # this process must have been restarted by the supervisor
    may_restart: frozenset[str] = frozenset()  # and these may have been (see the README)
    drain_timeout: float = 60.0
    max_answer_seconds: float = 12.0  # the longest any request may wait for its answer
    # In the short run (`make test`, CI) too; the others run under `make chaos` only.
    short: bool = True
    notes: list[str] = field(default_factory=list)


def _signal(process: str, signum: signal.Signals) -> Callable[[Chaos], None]:
    def send(chaos: Chaos) -> None:
        pid = chaos.stack.pid(process)
        assert pid, f"{process} is not running: {chaos.stack.processes()}"
        os.kill(pid, signum)

    return send


def _probe(url: str, seconds: float) -> list[float]:
    """Latencies of GETs to ``url`` for ``seconds``, one every 0.2 s: requests that need none
    of the slow dependency."""
    latencies = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            start = time.monotonic()
            client.get(url).raise_for_status()
            latencies.append(time.monotonic() - start)
            time.sleep(0.2)
    return latencies


def _readyz_reports_database(chaos: Chaos) -> None:
    time.sleep(0.5)
    for port in ("AUTH_PORT", "ORDERS_PORT"):
        response = httpx.get(f"{chaos.direct(port)}/readyz", timeout=10)
        assert response.status_code == 503, response.text
        assert response.json()["checks"]["database"] != "ok", response.text


def _unrelated_not_stalled(chaos: Chaos) -> None:
    """While a dependency is slow: the APIs' own health and the gateway's JWKS (served from
    memory) answer at their usual speed."""
    probes: dict[str, list[float]] = {}

    def run(name: str, url: str) -> None:
        probes[name] = _probe(url, max(1.0, FAULT_SECONDS - 1))

    threads = [
        threading.Thread(target=run, args=(name, url))
        for name, url in (
            ("orders /healthz", f"{chaos.direct('ORDERS_PORT')}/healthz"),
            ("auth /healthz", f"{chaos.direct('AUTH_PORT')}/healthz"),
            ("gateway jwks", f"{chaos.stack.base_url}/.well-known/jwks.json"),
        )
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, latencies in probes.items():
        assert latencies, f"no probe of {name}"
        # A stalled request would wait for the slow dependency (seconds at these delays);
        # the median allows for a machine shared with other work, the maximum for a hiccup.
        assert statistics.median(latencies) < 0.3, f"{name} stalled: {latencies}"
        assert max(latencies) < 3.0, f"{name} stalled: {latencies}"


def _stop_postgres(chaos: Chaos) -> None:
    chaos.services.postgres.stop()


def _start_postgres(chaos: Chaos) -> None:
    chaos.services.postgres.start()


def _slow(service: str, seconds: float) -> Callable[[Chaos], None]:
    def slow(chaos: Chaos) -> None:
        chaos.services.proxies[service].slow(seconds)

    return slow


def _unslow(service: str) -> Callable[[Chaos], None]:
    def restore(chaos: Chaos) -> None:
        chaos.services.proxies[service].restore()

    return restore


CASES = [
    Case(
        "rabbitmq stopped",
        inject=lambda c: c.services.rabbitmq.stop_app(),
        lift=lambda c: c.services.rabbitmq.start_app(),
    ),
    Case(
        "redis stopped",
        inject=lambda c: c.services.redis.stop(),
        lift=lambda c: c.services.redis.start(),
        # Celery's worker sometimes dies reconnecting to Redis (kombu's channel close restores
        # the unacked tasks through a connection already gone: AttributeError, "Unrecoverable
        # error"); the supervisor starts it again and its tasks come back.
        may_restart=frozenset({"worker"}),
    ),
    Case(
        "postgres stopped",
        inject=_stop_postgres,
        lift=_start_postgres,
        during=_readyz_reports_database,
        allowed_503=frozenset({DB_DOWN}),
    ),
    Case("worker SIGKILL", inject=_signal("worker", signal.SIGKILL), restarts="worker"),
    Case("consumer SIGKILL", inject=_signal("consumer", signal.SIGKILL), restarts="consumer"),
    # `events` is the outbox relay (and applies `order_processed`): SIGKILL mid-batch.
    Case("events SIGKILL", inject=_signal("events", signal.SIGKILL), restarts="events"),
    Case(
        "orders API SIGKILL",
        inject=_signal("orders", signal.SIGKILL),
        restarts="orders",
        allowed_503=frozenset({GATEWAY_DOWN}),
    ),
    *(
        Case(
            f"{process} SIGTERM",
            inject=_signal(process, signal.SIGTERM),
            restarts=process,
            allowed_503=frozenset({GATEWAY_DOWN}) if process in {"orders", "auth"} else frozenset(),
            # While the gateway itself restarts nothing listens on its port.
            allowed_no_answer=frozenset({"refused"}) if process == "gateway" else frozenset(),
            short=process == "gateway",
        )
        for process in ("worker", "consumer", "events", "orders", "auth", "gateway")
    ),
    Case(
        "redis slow (1 s per packet)",
        inject=_slow("redis", 1.0),
        lift=_unslow("redis"),
        during=_unrelated_not_stalled,
        max_answer_seconds=5.0,
        short=False,
    ),
    Case(
        "postgres slow (0.1 s per packet)",
        inject=_slow("postgres", 0.1),
        lift=_unslow("postgres"),
        during=_unrelated_not_stalled,
        allowed_503=frozenset({DB_DOWN}),
    ),
    Case(
        "rabbitmq slow (1 s per packet)",
        inject=_slow("rabbitmq", 1.0),
        lift=_unslow("rabbitmq"),
        during=_unrelated_not_stalled,
        max_answer_seconds=3.0,
        short=False,
    ),
]


def run_case(chaos: Chaos, case: Case) -> Tally:
    chaos.settle()
    restarts_before = chaos.stack.processes()
    stream = OrderStream(chaos.stack, chaos.tokens, case.name.split(" (")[0].replace(" ", "-"))
    try:
        with stream.running():
            time.sleep(LEAD_SECONDS)
            fault_start = time.monotonic()
            case.inject(chaos)
            if case.during is not None:
                case.during(chaos)
            time.sleep(max(0.0, fault_start + FAULT_SECONDS - time.monotonic()))
            if case.lift is not None:
                case.lift(chaos)
                fault_end = time.monotonic()
            else:
                fault_end = fault_start
            # Traffic goes on until a request sent after the fault's end succeeded, and a
            # second longer.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and recovery_time(stream.attempts, fault_end) is None:
                time.sleep(0.1)
            time.sleep(0.5)
    finally:
        chaos.services.ensure_up()
    after = chaos.stack.processes()
    restarted = {
        name: entry["restarts"] - restarts_before[name]["restarts"]
        for name, entry in after.items()
        if entry["restarts"] != restarts_before[name]["restarts"]
    }
    tally = count(
        stream,
        restarted=restarted,
        dsn=chaos.orders_dsn,
        spy=chaos.spy,
        fault_end=fault_end,
        drain_timeout=case.drain_timeout,
    )
    chaos.results.append(tally)
    context = f"{tally.as_json()}\n{chaos.stack.logs()[-3000:]}"

    assert tally.lost == 0, f"lost orders: {chaos.broker_state()} {context}"
    assert tally.doubled == 0, f"orders processed twice: {context}"
    for attempt in stream.attempts:
        if attempt.accepted:
            continue
        if attempt.no_answer:
            assert attempt.no_answer in case.allowed_no_answer, f"{attempt}: {context}"
        else:
            assert attempt.status == 503, f"{attempt}: {context}"
            assert attempt.detail in case.allowed_503, f"{attempt}: {context}"
            assert attempt.retry_after, f"503 without Retry-After: {attempt}"
    slowest = max((a.answered or 0) - a.sent for a in stream.attempts)
    assert slowest <= case.max_answer_seconds, f"an answer took {slowest:.1f} s: {context}"
    assert tally.recovery_s is not None, f"no request succeeded after the fault: {context}"
    for name in tally.restarted:
        assert name == case.restarts or name in case.may_restart, f"{name} restarted: {context}"
    if case.restarts:
        assert case.restarts in tally.restarted, f"{case.restarts} was not restarted: {context}"
    return tally


# `make chaos` runs every case (CHAOS_ALL=1); the default run, the short cases only.
RUN_ALL = os.environ.get("CHAOS_ALL") == "1"
REPEAT = int(os.environ.get("CHAOS_REPEAT", "1"))  # to hunt a rare failure


@pytest.mark.parametrize(
    "case", [c for c in CASES if RUN_ALL or c.short] * REPEAT, ids=lambda case: case.name
)
def test_fault(chaos: Chaos, case: Case) -> None:
    run_case(chaos, case)
