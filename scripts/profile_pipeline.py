"""Profile the event pipeline: start the stack the way `make run` does (tests/stack.py) with no
processing delay, write a backlog of orders with their `new_order` outbox rows straight into
the orders database (one transaction, then NOTIFY), and time how long relay -> consumer ->
worker -> `order_processed` take to process them all, while py-spy samples the pipeline's
processes (the relay, the consumer and the worker with its prefork children). Prints the drain
rate and the hottest frames of each process, by own time and inclusive.

    .venv/bin/python scripts/profile_pipeline.py [--orders 3000] [--out /tmp/pipeline] [--no-spy]

The drain rate is the pipeline's capacity without the API in front (`make bench-pipeline` and
`make bench` measure it end to end through the gateway). Needs py-spy (a dev dependency) with
ptrace rights (root, or kernel.yama.ptrace_scope=0)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from order_common.db import asyncpg_dsn  # noqa: E402
from order_common.events import EventType, NewOrder, envelope  # noqa: E402
from order_common.orders import OrderItem, OrderStatus  # noqa: E402
from scripts.profile_api import top_frames  # noqa: E402
from tests.stack import running_stack  # noqa: E402

ITEMS = [OrderItem(name="Laptop", quantity=1, price=Decimal("400.00"))]
# The Procfile's processes that are not on the pipeline.
NOT_PIPELINE = {"auth", "orders", "gateway"}


async def write_backlog(dsn: str, count: int) -> datetime:
    """``count`` orders and their outbox rows in one transaction, then NOTIFY; its commit time."""
    now = datetime.now(UTC)
    orders, outbox = [], []
    for _ in range(count):
        order_id = uuid.uuid4()
        event = envelope(
            EventType.NEW_ORDER,
            NewOrder(
                order_id=order_id,
                user_id=1,
                items=ITEMS,
                total_price=Decimal("400.00"),
                status=OrderStatus.PENDING,
                created_at=now,
            ),
        )
        items = json.dumps([item.model_dump(mode="json") for item in ITEMS])
        orders.append((order_id, items, now))
        outbox.append((event.event_id, event.model_dump_json(), now))
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            await connection.executemany(
                "INSERT INTO orders (id, user_id, items, total_price, status, version, "
                "created_at, updated_at) VALUES ($1, 1, $2::jsonb, 400.00, 'PENDING', 1, $3, $3)",
                orders,
            )
            await connection.executemany(
                "INSERT INTO outbox_events (id, event_type, payload, headers, created_at, "
                "attempts) VALUES ($1, 'new_order', $2::jsonb, '{}'::jsonb, $3, 0)",
                outbox,
            )
        await connection.execute("SELECT pg_notify('orders_outbox', '')")
    finally:
        await connection.close()
    return now


async def wait_processed(dsn: str, since: datetime, count: int, within: float) -> float:
    """Seconds until ``count`` orders created at ``since`` have ``processed_at``."""
    start = time.monotonic()
    connection = await asyncpg.connect(dsn)
    try:
        while time.monotonic() - start < within:
            done = await connection.fetchval(
                "SELECT count(*) FROM orders WHERE created_at = $1 AND processed_at IS NOT NULL",
                since,
            )
            if done >= count:
                break
            await asyncio.sleep(0.1)
    finally:
        await connection.close()
    return time.monotonic() - start


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and every process below it, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        pending += [int(child) for child in children]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "pipeline")
    parser.add_argument("--no-spy", action="store_true", help="no sampling overhead")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the stack")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extra = {"WORKER_PROCESSING_DELAY_SECONDS": "0", "ORDERS_RELAY_POLL_INTERVAL_SECONDS": "1"}
    extra.update(item.split("=", 1) for item in args.env)

    with tempfile.TemporaryDirectory() as workdir, running_stack(Path(workdir), extra) as stack:
        dsn = asyncpg_dsn(stack.env["ORDERS_DATABASE_URL"])
        # Warm-up: every process has connected and handled one order before the clock starts.
        since = asyncio.run(write_backlog(dsn, 1))
        asyncio.run(wait_processed(dsn, since, 1, 60))
        pids = {
            name: int(entry["pid"])
            for name, entry in stack.processes().items()
            if name not in NOT_PIPELINE and entry.get("pid")
        }
        print(f"pipeline processes: {pids}")
        spies = {}
        if not args.no_spy:
            for name, pid in pids.items():
                spies[name] = subprocess.Popen(
                    [
                        *(str(ROOT / ".venv/bin/py-spy"), "record", "--nonblocking"),
                        *("--subprocesses", "-r", "100", "-f", "raw"),
                        *("-o", str(args.out / f"{name}.txt"), "-p", str(pid)),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            time.sleep(1.0)  # py-spy attaches
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        since = asyncio.run(write_backlog(dsn, args.orders))
        elapsed = asyncio.run(wait_processed(dsn, since, args.orders, args.timeout))
        cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
        for spy in spies.values():
            spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
        for spy in spies.values():
            spy.wait(timeout=30)
        print(
            f"\n{args.orders} orders drained in {elapsed:.1f} s: "
            f"{args.orders / elapsed:.0f} orders/s (relay -> consumer -> worker -> applied)"
        )
        print(
            "CPU per order: "
            + ", ".join(f"{name} {1000 * used / args.orders:.2f} ms" for name, used in cpu.items())
            + f" (load average {os.getloadavg()[0]:.1f})"
        )
        for name in spies:
            path = args.out / f"{name}.txt"
            if path.exists():
                print(f"\n=== {name}\n{top_frames([path])}")


if __name__ == "__main__":
    main()
