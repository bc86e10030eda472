"""`make bench-pipeline`: how long an order takes through the event pipeline.

Starts the stack as `make run` does (tests/stack.py) with no processing delay in the worker,
places orders through the gateway at a steady rate, and reports per order:

- POST: the HTTP answer of `POST /orders/` (the order and its outbox row committed);
- processed: POST sent → `processed_at`, the worker's clock when it finished;
- visible: POST sent → the relay applied `order_processed` (`GET /orders/{id}/` shows it),
  read from the relay's log line `order_processed applied order_id=...`.

All clocks are this machine's. Options: --rate (orders/s), --seconds, --timeout."""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.common import ORDER, save_results
from order_common.db import asyncpg_dsn
from tests.stack import Stack, running_stack


async def _token(client: httpx.AsyncClient) -> str:
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    await client.post("/register/", json={"email": email, "password": "bench-pass"})
    issued = await client.post("/token/", data={"username": email, "password": "bench-pass"})
    issued.raise_for_status()
    token: str = issued.json()["access_token"]
    return token


async def _wait_processed(dsn: str, ids: list[str], within: float) -> dict[str, datetime]:
    """``processed_at`` of each order in ``ids`` that got one within ``within`` seconds."""
    deadline = time.monotonic() + within
    connection = await asyncpg.connect(dsn)
    try:
        while True:
            rows = await connection.fetch(
                "SELECT id::text, processed_at FROM orders "
                "WHERE id = ANY($1::uuid[]) AND processed_at IS NOT NULL",
                ids,
            )
            if len(rows) == len(ids) or time.monotonic() > deadline:
                return {row["id"]: row["processed_at"] for row in rows}
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


def _applied_at(logs: str) -> dict[str, float]:
    """When the relay applied `order_processed`, per order id, from its JSON log lines."""
    applied: dict[str, float] = {}
    for line in logs.splitlines():
        _, _, document = line.partition("| ")
        if "order_processed applied" not in document:
            continue
        try:
            entry = json.loads(document)
        except ValueError:
            continue
        applied[entry["order_id"]] = datetime.fromisoformat(entry["timestamp"]).timestamp()
    return applied


def latency_summary(values_ms: list[float]) -> dict[str, float]:
    if not values_ms:
        return {"count": 0}
    ordered = sorted(values_ms)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else []
    return {
        "count": len(ordered),
        "median_ms": statistics.median(ordered),
        "p90_ms": cuts[89] if cuts else ordered[0],
        "p99_ms": cuts[98] if cuts else ordered[0],
        "max_ms": ordered[-1],
    }


async def measure(stack: Stack, rate: float, seconds: float, wait: float) -> dict[str, Any]:
    dsn = asyncpg_dsn(stack.env["ORDERS_DATABASE_URL"])
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    # An API slower than the rate makes POSTs wait for a connection of the client: that wait
    # is part of the latency measured (open loop), not a failure; a non-2xx is one.
    timeout = httpx.Timeout(60, pool=None)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=timeout, limits=limits) as client:
        auth = {"Authorization": f"Bearer {await _token(client)}"}

        # Warm-up: the worker and every consumer are really there before the clock starts.
        warm = (await client.post("/orders/", json=ORDER, headers=auth)).json()["id"]
        if not await _wait_processed(dsn, [warm], 60):
            raise SystemExit(f"the warm-up order was not processed:\n{stack.logs()[-4000:]}")

        sent: dict[str, float] = {}
        post_ms: list[float] = []
        errors = 0

        async def place() -> None:
            nonlocal errors
            started, clock = time.time(), time.perf_counter()
            try:
                response = await client.post("/orders/", json=ORDER, headers=auth)
            except httpx.HTTPError:
                errors += 1
                return
            post_ms.append((time.perf_counter() - clock) * 1000)
            if response.status_code != 201:
                errors += 1
                return
            sent[response.json()["id"]] = started

        total = int(rate * seconds)
        begin = time.perf_counter()
        tasks = []
        for n in range(total):
            delay = begin + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(place()))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - begin

    processed = await _wait_processed(dsn, list(sent), wait)
    await asyncio.sleep(1.0)  # the log file may trail the database by a moment
    applied = _applied_at(stack.logs())
    return {
        "orders": total,
        "asked_per_s": rate,
        "rate_per_s": total / elapsed,  # placed and answered, the waits included
        "post_errors": errors,
        "unprocessed": len(sent) - len(processed),
        "post": latency_summary(post_ms),
        "processed": latency_summary(
            [(processed[i].timestamp() - sent[i]) * 1000 for i in sent if i in processed]
        ),
        "visible": latency_summary([(applied[i] - sent[i]) * 1000 for i in sent if i in applied]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=20.0, help="orders per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to place orders")
    parser.add_argument("--timeout", type=float, default=60.0, help="wait for the last ones")
    args = parser.parse_args()

    extra = {
        "ORDERS_RATE_LIMIT_ORDERS": "100000/second",  # see bench.run.UNLIMITED
        "WORKER_PROCESSING_DELAY_SECONDS": "0",
    }
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp), extra) as stack:
        result = asyncio.run(measure(stack, args.rate, args.seconds, args.timeout))

    print(
        f"\n{result['orders']} orders at {result['rate_per_s']:.1f}/s through the gateway; "
        f"{result['post_errors']} failed POSTs, {result['unprocessed']} never processed"
    )
    print(f"{'':28} {'n':>5} {'median ms':>10} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    labels = {
        "post": "POST /orders/ answered",
        "processed": "POST -> processed_at",
        "visible": "POST -> visible in GET",
    }
    for key, label in labels.items():
        row = result[key]
        if not row["count"]:
            print(f"{label:28} {0:5}")
            continue
        print(
            f"{label:28} {row['count']:5} {row['median_ms']:10.1f} {row['p90_ms']:8.1f} "
            f"{row['p99_ms']:8.1f} {row['max_ms']:8.1f}"
        )
    save_results("bench-pipeline", result)


if __name__ == "__main__":
    main()


# --- the highest sustained rate (`make bench`) ----------------------------------------------


def backlog_slope(samples: list[tuple[float, int]], skip: float = 0.25) -> float:
    """Orders per second the backlog grows by (least squares), leaving out the first
    ``skip`` of the samples, while the pipeline warms up to the new rate."""
    kept = samples[int(len(samples) * skip) :]
    if len(kept) < 2:
        return 0.0
    n = len(kept)
    mean_t = sum(t for t, _ in kept) / n
    mean_b = sum(b for _, b in kept) / n
    var = sum((t - mean_t) ** 2 for t, _ in kept)
    if var == 0:
        return 0.0
    return sum((t - mean_t) * (b - mean_b) for t, b in kept) / var


def keeps_up(rate: float, slope: float, failed: int) -> bool:
    """The pipeline keeps up with the orders it got when every POST succeeded and the backlog
    did not grow (by more than 2 % of the rate it got, plus one)."""
    return failed == 0 and slope <= 0.02 * rate + 1.0


def is_sustained(rate: float, achieved: float, slope: float, failed: int) -> bool:
    """``rate`` is sustained when the pipeline keeps up and the load really was ``rate``
    (within 5 %): an API that answers fewer POSTs than asked bounds the rate, not the
    pipeline behind it."""
    return keeps_up(rate, slope, failed) and achieved >= 0.95 * rate


_BACKLOG = "SELECT count(*) FROM orders WHERE created_at >= $1 AND processed_at IS NULL"


class BacklogSampler:
    """Counts, once a second in a thread of its own, the orders created since ``since`` that
    are not processed yet."""

    def __init__(self, dsn: str, since: datetime, interval: float = 1.0) -> None:
        self.dsn, self.since, self.interval = dsn, since, interval
        self.samples: list[tuple[float, int]] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # re-raised in the caller's thread
            self.error = exc

    async def _run(self) -> None:
        connection = await asyncpg.connect(self.dsn)
        try:
            start = time.monotonic()
            while not self._stop.is_set():
                count = await connection.fetchval(_BACKLOG, self.since)
                self.samples.append((time.monotonic() - start, int(count)))
                await asyncio.sleep(self.interval)
        finally:
            await connection.close()

    def __enter__(self) -> BacklogSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        # No samples would read as a flat backlog, "sustained": a failed count is no answer.
        if self.error is not None:
            raise RuntimeError("counting the backlog failed") from self.error


class Backlog:
    """The orders created since a moment that are not processed yet, counted over one
    connection kept for the whole run: a drain wait polls twice a second for up to two
    minutes, and a connection per poll can take the server's last free slots (asyncpg's
    TooManyConnectionsError) on a box where other stacks run too."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._runner = asyncio.Runner()
        self._connection: asyncpg.Connection | None = None

    def __enter__(self) -> Backlog:
        self._connection = self._runner.run(asyncpg.connect(self.dsn))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._connection is not None:
                self._runner.run(self._connection.close())
        finally:
            self._connection = None
            self._runner.close()

    def count(self, since: datetime) -> int:
        if self._connection is None:
            raise RuntimeError("Backlog is used as a context manager")
        return int(self._runner.run(self._connection.fetchval(_BACKLOG, since)))

    def wait_drained(self, since: datetime, timeout: float = 120.0) -> float:
        """Until every order created since ``since`` is processed (or ``timeout``); the
        seconds it took."""
        start = time.monotonic()
        while self.count(since) > 0 and time.monotonic() - start <= timeout:
            time.sleep(0.5)
        return time.monotonic() - start


def step(
    load: Callable[[float, float], Any], backlog: Backlog, rate: float, seconds: float
) -> dict[str, Any]:
    """``rate`` orders/s for ``seconds`` (``load(rate, seconds)`` runs wrk and answers its
    result); whether the pipeline kept up."""
    since = datetime.now(UTC)
    with BacklogSampler(backlog.dsn, since) as sampler:
        result = load(rate, seconds)
    slope = backlog_slope(sampler.samples)
    drain = backlog.wait_drained(since)
    return {
        "rate": rate,
        "seconds": seconds,
        "achieved_rps": result.rps,
        "failed": result.failed,
        "non_2xx": result.errors.get("status", 0),
        "post_p99_ms": result.p99_ms,
        "backlog_slope_per_s": slope,
        "backlog_max": max((b for _, b in sampler.samples), default=0),
        "drain_seconds": drain,
        "keeps_up": keeps_up(min(rate, result.rps), slope, result.failed),
        "sustained": is_sustained(rate, result.rps, slope, result.failed),
        "backlog": sampler.samples,
    }


def refined_rate(kept: list[float], failed: float, step: float = 25.0) -> float | None:
    """The rate halfway between the best sustained one (0 if none) and the first that fell
    behind, to the nearest ``step`` below: the steps are 100 orders/s apart, the figure
    should not be off by that much. None when the gap is already one step or less."""
    best = max(kept, default=0.0)
    middle = (best + failed) / 2 // step * step
    return middle if best < middle < failed else None


def print_probes(sustained: dict[str, Any]) -> None:
    """One line per rate probed: what it achieved and whether the pipeline kept up."""
    for probe in sustained["probes"] + sustained["confirms"]:
        print(
            f"  {probe['rate']:5.0f}/s for {probe['seconds']:.0f} s: achieved "
            f"{probe['achieved_rps']:.0f}/s, backlog {probe['backlog_slope_per_s']:+.1f}/s "
            f"(max {probe['backlog_max']}), failed {probe['failed']}: "
            + (
                "sustained"
                if probe["sustained"]
                else "kept up with fewer POSTs than asked"
                if probe["keeps_up"]
                else "falls behind"
            ),
            flush=True,
        )


def highest_sustained(
    load: Callable[[float, float], Any],
    backlog: Backlog,
    rates: tuple[int, ...],
    probe_seconds: float,
    confirm_seconds: float,
    refinements: int = 3,
) -> dict[str, Any]:
    """Step the rate up until the backlog grows (then probe halfway back, and again) or the API
    answers fewer POSTs than asked (stepping higher only queues more); then hold the probe
    that kept up at the highest achieved rate for ``confirm_seconds`` (the next one if it does
    not hold). The figure is the orders per second the confirming run really placed and the
    pipeline kept up with; ``bounded_by_post`` says the POSTs fell short of the asked rate."""
    probes: list[dict[str, Any]] = []
    for rate in rates:
        probes.append(step(load, backlog, rate, probe_seconds))
        last = probes[-1]
        if last["sustained"]:
            continue
        # Fell behind: halve the gap to the best sustained rate (to 0 if none) until a probe
        # holds or ``refinements`` probes were spent.
        failed = rate
        for _ in range(refinements):
            if last["keeps_up"]:
                break
            middle = refined_rate([p["rate"] for p in probes if p["sustained"]], failed)
            if middle is None:
                break
            probes.append(step(load, backlog, middle, probe_seconds))
            last, failed = probes[-1], middle
        break

    def placed(p: dict[str, Any]) -> float:
        return float(min(p["achieved_rps"], p["rate"]))

    candidates = sorted((p for p in probes if p["keeps_up"]), key=placed, reverse=True)
    confirms: list[dict[str, Any]] = []
    held: dict[str, Any] | None = None
    for candidate in candidates[:2]:
        if confirm_seconds <= 0:
            held = candidate
            break
        confirms.append(step(load, backlog, candidate["rate"], confirm_seconds))
        if confirms[-1]["keeps_up"]:
            held = confirms[-1]
            break
    return {
        "sustained_rate": placed(held) if held else 0.0,
        "asked_rate": held["rate"] if held else None,
        "bounded_by_post": bool(held) and not held["sustained"],
        "confirm_seconds": confirm_seconds,
        # Timeouts past the capacity are what overload looks like; an answer that is not a
        # success is an error at any rate.
        "failed": sum(p["failed"] for p in probes + confirms),
        "non_2xx": sum(p["non_2xx"] for p in probes + confirms),
        "top_of_range": bool(held) and held["sustained"] and held["rate"] == rates[-1],
        "probes": probes,
        "confirms": confirms,
    }
