"""`orders-service serve` the way the Procfile, the image and the chart start it: uvicorn
workers from ORDERS_WORKERS, and one /metrics that adds up every worker's."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The fields after the ")" of the command: state, ppid, ...
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def served(database_url: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with _serving(database_url, tmp_path, {}) as answer:
        yield answer


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that takes every export and keeps nothing."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def served_exporting(
    database_url: str, tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``served``, exporting its spans (to a sink): exemplars name only exported traces."""
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=sink.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"
    try:
        with _serving(database_url, tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}) as answer:
            yield answer
    finally:
        sink.shutdown()
        sink.server_close()


@contextmanager
def _serving(
    database_url: str, tmp_path: Path, extra: dict[str, str]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {
        **os.environ,
        "ORDERS_DATABASE_URL": database_url,
        "ORDERS_WORKERS": "2",
        "ORDERS_ENVIRONMENT": "test",
        **extra,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [BIN / "orders-service", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        # Generous: each worker is a fresh interpreter, and the test machine may be busy.
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def _count(text: str, route: str) -> float:
    pattern = rf'^http_requests_total\{{[^}}]*route="{re.escape(route)}"[^}}]*\}} (\S+)$'
    return sum(float(value) for value in re.findall(pattern, text, re.M))


def test_serve_runs_the_configured_workers_and_metrics_add_them_up(
    served: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base, proc = served
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 2:
        assert time.monotonic() < deadline, _children(proc.pid)
        time.sleep(0.2)
    # A new connection per request: the kernel spreads them over the workers' accept queues.
    for _ in range(30):
        assert httpx.get(f"{base}/healthz/", headers={"Connection": "close"}).status_code == 200
    seen = set()
    for _ in range(20):
        text = httpx.get(f"{base}/metrics", headers={"Connection": "close"}).text
        seen.add(_count(text, "/healthz"))
    # Whichever worker answers the scrape, it reports all 30 (plus the start-up probes), never
    # only its own share; no pid label splits a series.
    assert min(seen) >= 30
    assert 'pid="' not in text


def test_every_worker_parses_with_httptools_on_the_uvloop_event_loop(
    served: tuple[str, subprocess.Popen[bytes]],
) -> None:
    _, proc = served
    deadline = time.monotonic() + 60
    while len(_children(proc.pid)) < 2:
        assert time.monotonic() < deadline, _children(proc.pid)
        time.sleep(0.2)
    for worker in _children(proc.pid):
        libraries = Path(f"/proc/{worker}/maps").read_text()
        if "multiprocessing.resource_tracker" in Path(f"/proc/{worker}/cmdline").read_text():
            continue
        assert "/uvloop/" in libraries, worker
        assert "/httptools/" in libraries, worker


def test_every_worker_shows_the_latency_exemplars_of_any_worker(
    served_exporting: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base, _ = served_exporting
    # One keep-alive connection: all of these reach the same worker.
    with httpx.Client(base_url=base) as client:
        for _ in range(10):
            assert client.get("/orders/user/1/").status_code == 401  # traced
    for _ in range(10):
        # A new connection each: the scrapes reach either worker, and each must show them.
        text = httpx.get(
            f"{base}/metrics", headers={"Accept": OPENMETRICS, "Connection": "close"}
        ).text
        exemplars = [
            line
            for line in text.splitlines()
            if line.startswith("http_request_duration_seconds_bucket") and "trace_id=" in line
        ]
        assert exemplars, text
        assert all(re.search(r'# \{trace_id="[0-9a-f]{32}"\}', line) for line in exemplars)
