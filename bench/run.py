"""`make bench`: load the running stack with wrk and report each endpoint as a ratio against a
reference measured in the same run (a trivial FastAPI handler on the same machine), because
these machines are shared and absolute numbers drift from run to run."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import uuid
from pathlib import Path

import httpx

from bench.common import ORDER, save_results
from tests.stack import running_stack


def wrk(url: str, seconds: int, connections: int, script: Path | None) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        command[1:1] = ["-s", str(script)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = {
        pct: _ms(value) for pct, value in re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)", out, re.M)
    }
    return {
        "rps": rps,
        "p50_ms": latency.get("50", float("nan")),
        "p99_ms": latency.get("99", float("nan")),
        "errors": float(non_2xx.group(1)) if non_2xx else 0.0,
    }


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def lua(path: Path, method: str, token: str, body: str | None = None) -> Path:
    lines = [f'wrk.method = "{method}"', f'wrk.headers["Authorization"] = "Bearer {token}"']
    if body is not None:
        lines += ['wrk.headers["Content-Type"] = "application/json"', f"wrk.body = [[{body}]]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        # The per-user limit stays in the path (its cost is part of each request) but high
        # enough not to cut the load off.
        extra = {
            "ORDERS_RATE_LIMIT_ORDERS": "100000000/minute",
            "WORKER_PROCESSING_DELAY_SECONDS": "0",
        }
        with running_stack(workdir, extra) as stack:
            email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
            with httpx.Client(base_url=stack.base_url, timeout=10) as client:
                client.post("/register/", json={"email": email, "password": "bench-pass"})
                token = client.post(
                    "/token/", data={"username": email, "password": "bench-pass"}
                ).json()["access_token"]
                auth = {"Authorization": f"Bearer {token}"}
                order_id = client.post("/orders/", json=ORDER, headers=auth).json()["id"]
            orders_direct = f"http://127.0.0.1:{stack.env['ORDERS_PORT']}"
            runs = {
                "reference: GET /healthz (orders, direct)": (f"{orders_direct}/healthz", None),
                "POST /orders/ (gateway)": (
                    f"{stack.base_url}/orders/",
                    lua(workdir / "post.lua", "POST", token, json.dumps(ORDER)),
                ),
                "GET /orders/{id}/ (gateway, cached)": (
                    f"{stack.base_url}/orders/{order_id}/",
                    lua(workdir / "get.lua", "GET", token),
                ),
            }
            results = {
                name: wrk(url, args.seconds, args.connections, script)
                for name, (url, script) in runs.items()
            }

    reference = next(iter(results.values()))["rps"]
    print(f"\n{'endpoint':45} {'req/s':>9} {'ratio':>7} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, result in results.items():
        print(
            f"{name:45} {result['rps']:9.0f} {result['rps'] / reference:7.2f} "
            f"{result['p50_ms']:8.1f} {result['p99_ms']:8.1f} {result['errors']:8.0f}"
        )
    save_results("bench", results)


if __name__ == "__main__":
    main()
