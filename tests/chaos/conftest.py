"""The chaos suite's stack: the platform as `make run` runs it, on private PostgreSQL, Redis and
RabbitMQ (tests/chaos/services.py) that the cases stop, start and slow down.

``CHAOS_FAULT_SECONDS`` sets how long each fault lasts: a few seconds by default (the short
cases that `make test` and CI run), 20 under `make chaos`. The table of every case is printed
at the end of the run and written as JSON to ``CHAOS_RESULTS`` (default
``.run/chaos/results.json``)."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.chaos.load import ReportSpy, Tally
from tests.chaos.services import PrivateServices, private_services
from tests.stack import ROOT, Stack, running_stack

FAULT_SECONDS = float(os.environ.get("CHAOS_FAULT_SECONDS", "2"))
RESULTS_PATH = Path(os.environ.get("CHAOS_RESULTS", str(ROOT / ".run" / "chaos" / "results.json")))
USERS = 4

# What the stack runs with: the limits are raised so that the load is never refused for its
# rate, and the worker's bounds are short so that a killed worker's tasks come back in
# seconds (time limit 3 s + back-off 2 s < visibility timeout 6 s; see order_worker.settings).
STACK_ENV = {
    "ORDERS_RATE_LIMIT_ORDERS": "100000/minute",
    "AUTH_RATE_LIMIT_REGISTER": "1000/minute",
    "AUTH_WORKERS": "1",
    "ORDERS_WORKERS": "2",
    "WORKER_PROCESSING_DELAY_SECONDS": "0.1",
    "WORKER_TASK_TIME_LIMIT_SECONDS": "3",
    "WORKER_TASK_RETRY_BACKOFF_MAX_SECONDS": "2",
    "WORKER_VISIBILITY_TIMEOUT_SECONDS": "6",
    "WORKER_RESTORE_INTERVAL_SECONDS": "2",
    # A task the broker dropped in flight is asked for again 10 s after (300 s by default).
    "ORDERS_REANNOUNCE_AFTER_SECONDS": "10",
    "ORDERS_REANNOUNCE_INTERVAL_SECONDS": "2",
}

RESULTS: list[Tally] = []


@dataclass
class Chaos:
    stack: Stack
    services: PrivateServices
    tokens: list[str]
    spy: ReportSpy
    results: list[Tally] = field(default_factory=lambda: RESULTS)

    @property
    def orders_dsn(self) -> str:
        return f"{self.services.postgres.dsn}/orders_{self.stack.run_id}"

    def direct(self, name: str) -> str:
        """The base URL of a service itself (not the gateway)."""
        return f"http://127.0.0.1:{self.stack.env[name]}"

    def broker_state(self) -> dict[str, Any]:
        """Celery's keys in Redis (read directly): what a failure report needs to tell a task
        never sent from one never restored."""
        client = redis.Redis.from_url(f"{self.services.redis.url}/1")
        try:
            state: dict[str, Any] = {}
            for key in client.scan_iter(match=f"{self.stack.env['WORKER_CELERY_KEY_PREFIX']}*"):
                kind = client.type(key).decode()
                size = {"list": client.llen, "hash": client.hlen, "zset": client.zcard}.get(
                    kind, lambda _: None
                )(key)
                state[key.decode()] = {"type": kind, "size": size, "ttl": client.ttl(key)}
            return state
        finally:
            client.close()

    def settle(self, timeout: float = 60) -> None:
        """Before a case: every data service up, every process running, every API ready."""
        self.services.ensure_up()
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            processes = self.stack.processes()
            down = [name for name, p in processes.items() if p.get("state") != "running"]
            if processes and not down:
                try:
                    ready = [
                        httpx.get(f"{self.direct(port)}/readyz", timeout=2).status_code
                        for port in ("AUTH_PORT", "ORDERS_PORT")
                    ]
                    gateway = httpx.get(f"{self.stack.base_url}/healthz", timeout=2).status_code
                    if ready == [200, 200] and gateway == 200:
                        return
                    last = f"readyz {ready}, gateway {gateway}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
            else:
                last = f"not running: {down}"
            time.sleep(0.2)
        raise AssertionError(f"the stack did not settle ({last}):\n{self.stack.logs()[-4000:]}")


def _tokens(stack: Stack) -> list[str]:
    tokens = []
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        for _ in range(USERS):
            email = f"chaos-{uuid.uuid4().hex[:8]}@example.com"
            password = "chaos-pass-1"
            created = client.post("/register/", json={"email": email, "password": password})
            assert created.status_code == 201, created.text
            issued = client.post("/token/", data={"username": email, "password": password})
            assert issued.status_code == 200, issued.text
            tokens.append(issued.json()["access_token"])
    return tokens


@pytest.fixture(scope="session")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    with (
        private_services() as services,
        running_stack(
            tmp_path_factory.mktemp("chaos"), extra_env=STACK_ENV, services=services.for_stack()
        ) as stack,
    ):
        spy = ReportSpy(stack, services.rabbitmq.url)
        try:
            yield Chaos(stack=stack, services=services, tokens=_tokens(stack), spy=spy)
        finally:
            services.ensure_up()  # the stack's own clean-up needs them
            RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(stack.log_path, RESULTS_PATH.parent / "stack.log")


def _fmt_seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def table(results: list[Tally]) -> str:
    lines = [
        "| case | sent | accepted | lost | doubled | 5xx | no answer | API recovery | drained "
        "| restarted |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in results:
        five = ", ".join(f"{n} x {kind}" for kind, n in t.five_xx.items()) or "0"
        silent = sum(n for kind, n in t.failures.items() if kind.startswith("no answer"))
        lines.append(
            f"| {t.case} | {t.sent} | {t.accepted} | {t.lost} | {t.doubled} | {five} | "
            f"{silent} | {_fmt_seconds(t.recovery_s)} | {_fmt_seconds(t.drained_s)} | "
            f"{', '.join(sorted(t.restarted)) or '—'} |"
        )
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RESULTS:
        return
    terminalreporter.section(f"chaos: {FAULT_SECONDS:g} s faults, ~10 orders/s")
    terminalreporter.write_line(table(RESULTS))
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_PATH.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "fault_seconds": FAULT_SECONDS,
                "cases": [t.as_json() for t in RESULTS],
            },
            indent=2,
        )
    )
    terminalreporter.write_line(f"(JSON: {RESULTS_PATH})")
