"""`make bench`: the targets of issue 9, measured in one unattended run on this machine.

Starts the stack as `make run` does (tests/stack.py) with the rate limits raised (for the bench
only) and no processing delay, plus the reference app (bench/reference.py) with the same server
settings and worker count. Every scenario is alternated with its reference (A B A B A B) and
reported as the median of the per-round ratios, because the box is shared and absolute numbers
drift; any answer that is not a success (a 429 included) makes the scenario invalid.

Writes bench/results/<timestamp>.json and prints each target, its measured figure and pass or
miss. Exits 1 only when a scenario errored or was invalid, never because a target was missed.

Profiles: --quick (about a minute, for CI), the default (~10-15 min), --full (adds 10M rows)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from bench import data, pipeline, scale
from bench.common import ORDER, write_report
from bench.compare import Comparison, Target, comparison_table, p99, table
from bench.procs import api_workers, memory, reference_app
from bench.scenarios import Bench, Profile
from bench.wrk import Request
from order_common.db import asyncpg_dsn
from tests.stack import REDIS_URL, free_port, running_stack

UNLIMITED = "1000000000/minute"
REFERENCE = "reference app"
# Raised for the bench only: a 429 would cut the load off and invalidate the scenario.
BENCH_ENV = {
    "ORDERS_RATE_LIMIT_ORDERS": UNLIMITED,
    "AUTH_RATE_LIMIT_TOKEN_IP": UNLIMITED,
    "AUTH_RATE_LIMIT_TOKEN_USERNAME": UNLIMITED,
    "AUTH_RATE_LIMIT_REGISTER": UNLIMITED,
    "AUTH_ACCESS_TOKEN_TTL_SECONDS": "21600",
    "ORDERS_CACHE_TTL_SECONDS": "3600",
    "WORKER_PROCESSING_DELAY_SECONDS": "0",
}

PROFILES = {
    "quick": Profile(
        name="quick",
        # Long enough that a request on a busy box still gets answered within its run.
        seconds=2,
        rounds=1,
        connections=8,
        users=4,
        orders_per_user=600,
        cached_pool=300,
        miss_pool=600,
        scale_rows=(1_000, 20_000),
        scale_pool=300,
        storm_rate=50,
        pipeline_rates=(20,),
        pipeline_probe_seconds=4,
        pipeline_confirm_seconds=0,
        latency_rate=20,
        latency_seconds=3,
    ),
    "default": Profile(name="default", seconds=5, rounds=3),
    "full": Profile(name="full", seconds=5, rounds=3, scale_rows=(1_000, 1_000_000, 10_000_000)),
}


def _rss_target(rows: list[dict[str, Any]]) -> Target:
    # The reference app is the bench's, not the platform's: reported, not held to the target.
    ours = [row for row in rows if row["group"] != REFERENCE]
    top = ours[0] if ours else {"rss_mb": None, "command": ""}
    return Target(
        "Memory: largest RSS of a platform process after the run",
        float(top["rss_mb"]) if top["rss_mb"] is not None else None,
        150,
        at_most=True,
        unit=" MB",
        detail=str(top["command"]),
    )


def targets(
    results: dict[str, Comparison], pipe: dict[str, Any], rss: list[dict[str, Any]]
) -> list[Target]:
    def ratio(name: str, ref: str, text: str, threshold: float) -> Target:
        c = results.get(name)
        return Target(text, c.ratio(ref) if c else None, threshold, valid=bool(c and c.valid))

    def slowdown(name: str, text: str) -> Target:
        # "within 1.5x": the big table may cost at most 1.5x the small one (throughput).
        c = results.get(name)
        value = 1 / c.ratio() if c and c.ratio() else None
        return Target(text, value, 1.5, at_most=True, valid=bool(c and c.valid))

    out = [
        ratio("GET /orders/{id}/ cached, gateway", "/redis", "Cached GET, gateway / `/redis`", 0.6),
        ratio("GET /orders/{id}/ cached, direct", "/redis", "Cached GET, direct / `/redis`", 0.75),
        ratio("POST /orders/, gateway", "/insert", "POST /orders/, gateway / `/insert`", 0.4),
    ]
    sustained = pipe.get("sustained", {})
    out.append(
        Target(
            "Pipeline: highest sustained rate, delay 0",
            sustained.get("sustained_rate"),
            300,
            unit=" orders/s",
            valid=bool(sustained) and sustained.get("failed", 1) == 0,
            detail="a lower bound: the top of the probed range"
            if sustained.get("top_of_range")
            else "",
        )
    )
    latency = pipe.get("latency", {})
    processed = latency.get("processed", {})
    out.append(
        Target(
            f"Pipeline: POST -> processed_at p99 at {latency.get('rate_per_s', 0):.0f} orders/s",
            processed.get("p99_ms"),
            250,
            at_most=True,
            unit=" ms",
            valid=bool(processed.get("count"))
            and latency.get("post_errors", 1) == 0
            and latency.get("unprocessed", 1) == 0,
        )
    )
    storm = results.get("login storm: cached GET p99 (gateway)")
    out.append(
        Target(
            "Login storm: cached GET p99 with / without",
            storm.ratio("alone", p99) if storm else None,
            2,
            at_most=True,
            valid=bool(storm and storm.valid),
        )
    )
    for name in results:
        if name.startswith("scale: cache-miss GET") or name.startswith("scale: list first page"):
            out.append(slowdown(name, name.removeprefix("scale: ") + " (slowdown)"))
    out.append(_rss_target(rss))
    return out


def run(profile: Profile, workdir: Path) -> dict[str, Any]:
    results: dict[str, Comparison] = {}
    pipe: dict[str, Any] = {}
    started = time.monotonic()

    def phase(text: str) -> None:
        print(f"\n[{time.monotonic() - started:5.0f} s] {text}", flush=True)

    def keep(comparisons: Iterable[Comparison]) -> None:
        for c in comparisons:  # printed as each one ends
            results[c.name] = c
            print(f"{comparison_table([c], header=False)}  ({c.seconds:.0f} s)", flush=True)

    with running_stack(workdir, BENCH_ENV) as stack, ExitStack() as resources:
        env = stack.env
        bench = Bench(profile, stack, workdir)
        bench.sessions["stack"] = stack.supervisor_pid
        workers = api_workers(env)
        print(f"stack up in {time.monotonic() - started:.0f} s; API workers: {workers}", flush=True)

        phase("users, orders and the reference app")
        bench.register_users()
        ids = [u.id for u in bench.users]
        data.load_for_users(env["ORDERS_DATABASE_URL"], ids, profile.orders_per_user)
        api_since = datetime.now(UTC)
        pending = data.sample_orders(
            env["ORDERS_DATABASE_URL"], ids, profile.users * profile.orders_per_user
        )
        n_cached, n_miss = profile.cached_pool, profile.miss_pool
        bench.pools = {
            "cached": pending[:n_cached],
            "miss": pending[n_cached : n_cached + n_miss],
            "patch": pending[n_cached + n_miss :],
        }

        # The reference app: its own database (migrated like orders) and a real cache entry.
        ref_db = data.bench_database_url(f"bench_{stack.run_id}_ref")
        resources.callback(data.drop, ref_db)
        data.migrate(ref_db)
        data.load_for_users(ref_db, [1], 1)
        select_id = data.sample_orders(ref_db, [1], 1)[0][0]
        first_id, first_user = bench.pools["cached"][0]
        with httpx.Client(base_url=stack.base_url, timeout=10) as client:
            entry = client.get(
                f"/orders/{first_id}/",
                headers={"Authorization": f"Bearer {bench.token_of(first_user)}"},
            )
            entry.raise_for_status()
        ref_key = f"test:{stack.run_id}:bench:order"
        redis.Redis.from_url(REDIS_URL).set(ref_key, entry.content)
        ref_env = {
            **env,
            "BENCH_REF_REDIS_URL": REDIS_URL,
            "BENCH_REF_REDIS_KEY": ref_key,
            "BENCH_REF_JWKS_URL": env["ORDERS_JWKS_URL"],
            "BENCH_REF_DATABASE_URL": ref_db,
            "BENCH_REF_SELECT_ID": str(select_id),
        }
        reference = resources.enter_context(
            reference_app(ref_env, free_port(), workdir / "reference.log")
        )
        bench.sessions[REFERENCE] = reference.proc.pid
        bench.reference_url = reference.url

        dsn = asyncpg_dsn(env["ORDERS_DATABASE_URL"])

        def drained() -> None:
            pipeline.wait_drained(dsn, api_since)

        phase("warm-up")
        bench.warm_up()
        drained()
        phase("scenarios (median of per-round ratios):")
        for where, targets_ in (("direct", bench.direct), ("gateway", bench.gateway)):
            keep(bench.api_scenarios(where, targets_, drained))
        keep([bench.login_storm()])

        # The pipeline: the highest rate it keeps up with, then the latency at a steady rate.
        drained()
        body = json.dumps(ORDER)
        posts = [Request("POST", "/orders/", u.token, body) for u in bench.users]

        def post_at(rate: float, seconds: float) -> Any:
            connections = int(min(256, max(8, rate // 2)))
            return bench.load(
                stack.base_url, posts, rate=rate, connections=connections, seconds=seconds
            )

        phase("pipeline: highest sustained rate")
        pipe["sustained"] = pipeline.highest_sustained(
            post_at,
            dsn,
            profile.pipeline_rates,
            profile.pipeline_probe_seconds,
            profile.pipeline_confirm_seconds,
        )
        for probe in pipe["sustained"]["probes"] + pipe["sustained"]["confirms"]:
            print(
                f"  {probe['rate']:5.0f}/s for {probe['seconds']:.0f} s: achieved "
                f"{probe['achieved_rps']:.0f}/s, backlog {probe['backlog_slope_per_s']:+.1f}/s "
                f"(max {probe['backlog_max']}), failed {probe['failed']}: "
                f"{'sustained' if probe['sustained'] else 'falls behind'}",
                flush=True,
            )
        phase(f"pipeline: POST -> processed_at at {profile.latency_rate:g} orders/s")
        pipe["latency"] = asyncio.run(
            pipeline.measure(stack, profile.latency_rate, profile.latency_seconds, 60)
        )
        print(f"  POST -> processed_at: {pipe['latency']['processed']}", flush=True)

        phase("scale: bulk-loading the tables")
        tables = [scale.prepare(bench, rows, resources) for rows in profile.scale_rows]
        phase("scale: read scenarios")
        for big in tables[1:]:
            keep(scale.comparisons(bench, tables[0], big))

        rss = memory(bench.sessions)

    measured = targets(results, pipe, rss)
    return {
        "profile": asdict(profile),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": platform.python_version(),
        },
        "api_workers": workers,
        "duration_s": time.monotonic() - started,
        "targets": [t.to_json() for t in measured],
        "scenarios": {name: c.to_json() for name, c in results.items()},
        "pipeline": pipe,
        "memory": rss,
        "_comparisons": results,
        "_targets": measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="about a minute; for CI")
    mode.add_argument("--full", action="store_true", help="adds the 10M-row table")
    parser.add_argument("--seconds", type=float, help="one wrk run (default: the profile's)")
    parser.add_argument("--rounds", type=int, help="A B rounds per scenario")
    args = parser.parse_args()

    profile = PROFILES["quick" if args.quick else "full" if args.full else "default"]
    if args.seconds:
        profile = replace(profile, seconds=args.seconds)
    if args.rounds:
        profile = replace(profile, rounds=args.rounds)

    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        report = run(profile, Path(tmp))
    comparisons: dict[str, Comparison] = report.pop("_comparisons")
    measured: list[Target] = report.pop("_targets")
    report["started_at"] = started_at.isoformat()
    path = write_report(report, started_at)

    print("\n" + comparison_table(list(comparisons.values())))
    print("\nmemory (RSS, MB):")
    for row in report["memory"]:
        print(f"  {row['rss_mb']:7.1f}  {row['group']:28} {row['command']}")
    print("\n" + table(measured))
    print(f"\n{profile.name} run, {report['duration_s']:.0f} s; written to {path}")

    invalid = [c.name for c in comparisons.values() if not c.valid]
    pipe = report["pipeline"]
    if pipe["sustained"]["failed"]:
        invalid.append("pipeline: sustained rate")
    if pipe["latency"]["post_errors"] or pipe["latency"]["unprocessed"]:
        invalid.append("pipeline: latency at a steady rate")
    if invalid:
        print("\nINVALID (an error or a non-2xx answer): " + "; ".join(invalid), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
