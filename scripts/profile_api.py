"""Profile the orders API under load: start the stack the way `make run` does (tests/stack.py),
make one user and one order, then run wrk (2 threads, 32 connections) against the orders port
directly for a cached `GET /orders/{id}/` and for `POST /orders/`, with py-spy sampling every
orders process. Prints wrk's summary and the top frames (self and inclusive) of each scenario.

    .venv/bin/python scripts/profile_api.py [--seconds 10] [--out /tmp/profile] [--no-spy]

Needs wrk and py-spy (a dev dependency); py-spy needs ptrace rights (root, or
kernel.yama.ptrace_scope=0). Rate limits are raised for the run: wrk sends one user's token."""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.stack import running_stack  # noqa: E402

ORDER = {"items": [{"name": "Laptop", "quantity": 1, "price": "400.00"}], "total_price": "400.00"}


def pids_listening(port: str) -> list[int]:
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    return sorted({int(pid) for pid in re.findall(r"pid=(\d+)", out)})


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of ``pids`` so far (fields 14 and 15 of /proc/PID/stat)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def top_frames(paths: list[Path], count: int = 15) -> str:
    """The hottest frames of py-spy's raw (collapsed) output: by own time and inclusive."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, samples = line.rpartition(" ")
            n = int(samples)
            total += n
            frames = stack.split(";")
            own[frames[-1]] += n
            for frame in set(frames):
                inclusive[frame] += n
    if not total:
        return "no samples"
    lines = [f"{total} samples", "self:"]
    lines += [f"  {100 * n / total:5.1f}% {frame}" for frame, n in own.most_common(count)]
    lines.append("inclusive:")
    lines += [f"  {100 * n / total:5.1f}% {frame}" for frame, n in inclusive.most_common(count * 3)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "profile")
    parser.add_argument("--no-spy", action="store_true", help="wrk only (no sampling overhead)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the stack")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    extra = {"ORDERS_RATE_LIMIT_ORDERS": "100000000/minute"}
    extra.update(item.split("=", 1) for item in args.env)

    with tempfile.TemporaryDirectory() as workdir, running_stack(Path(workdir), extra) as stack:
        direct = f"http://127.0.0.1:{stack.env['ORDERS_PORT']}"
        email, password = f"profile-{uuid.uuid4().hex[:8]}@example.com", uuid.uuid4().hex
        with httpx.Client(base_url=stack.base_url, timeout=10) as client:
            client.post("/register/", json={"email": email, "password": password})
            answer = client.post("/token/", data={"username": email, "password": password})
            token = answer.json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            order_id = client.post("/orders/", json=ORDER, headers=headers).json()["id"]
            client.get(f"/orders/{order_id}/", headers=headers).raise_for_status()
        post_lua = args.out / "post.lua"
        post_lua.write_text(
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = [[{json.dumps(ORDER)}]]\n"
        )
        pids = pids_listening(stack.env["ORDERS_PORT"])
        print(f"orders processes: {pids}")
        scenarios = {
            "get": [f"{direct}/orders/{order_id}/"],
            "post": ["-s", str(post_lua), f"{direct}/orders/"],
        }
        for name, wrk_args in scenarios.items():
            outputs = [args.out / f"{name}-{pid}.txt" for pid in pids]
            spies = []
            if not args.no_spy:
                spies = [
                    subprocess.Popen(
                        [
                            *(str(ROOT / ".venv/bin/py-spy"), "record", "--nonblocking"),
                            *("-r", "200", "-d", str(max(1, args.seconds - 2)), "-f", "raw"),
                            *("-o", str(output), "-p", str(pid)),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    for pid, output in zip(pids, outputs, strict=True)
                ]
            cpu_before = cpu_seconds(pids)
            wrk = subprocess.run(
                [
                    *("wrk", "-t2", "-c32", f"-d{args.seconds}s", "--latency"),
                    *("-H", f"Authorization: Bearer {token}", *wrk_args),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            cpu = cpu_seconds(pids) - cpu_before
            for spy in spies:
                spy.wait()
            print(f"=== {name}\n{wrk.stdout}{wrk.stderr}")
            done = re.search(r"(\d+) requests in", wrk.stdout)
            if done and int(done.group(1)):
                print(f"orders CPU per request: {1000 * cpu / int(done.group(1)):.2f} ms")
            if spies:
                print(top_frames([path for path in outputs if path.exists()]))


if __name__ == "__main__":
    main()
