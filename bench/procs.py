"""Processes the benchmark starts next to the stack (the reference app, the orders APIs over the
scale tables) and the memory of every process at the end."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.stack import BIN, ROOT


def api_workers(env: dict[str, str]) -> int:
    """The worker processes `orders-service serve` runs with ``env``."""
    from order_common.serve import worker_count
    from orders_service.settings import Settings

    configured = env.get("ORDERS_WORKERS") or os.environ.get("ORDERS_WORKERS")
    return worker_count(int(configured) if configured else Settings().workers)


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    ready_url: str = ""


@dataclass(frozen=True)
class Spec:
    """A process to start: ``url`` is where it serves, ``ready_url`` answers once it does."""

    name: str
    command: list[str]
    env: dict[str, str]
    url: str
    ready_url: str
    log: Path


# A uvicorn master spawning its workers on a box where other work runs: a minute is not enough.
READY_TIMEOUT = 180.0


def _wait_http(process: Process, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    log = process.log
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(
                f"{process.name} exited early:\n{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            if httpx.get(process.ready_url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(
        f"{process.name} did not answer {process.ready_url}:\n"
        f"{log.read_text(errors='replace')[-3000:]}"
    )


def _launch(spec: Spec) -> Process:
    with spec.log.open("wb") as out:
        proc = subprocess.Popen(
            spec.command,
            cwd=ROOT,
            env={**os.environ, **spec.env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(spec.name, proc, spec.url, spec.log, spec.ready_url)


@contextmanager
def started(
    *specs: Spec, on_stop: Callable[[Process], None] | None = None
) -> Iterator[list[Process]]:
    """Start every process at once (their imports and worker spawns overlap), wait until each
    answers, stop them all on the way out; ``on_stop`` sees each one just before it stops (its
    memory is read there)."""
    processes: list[Process] = []
    try:
        for spec in specs:
            processes.append(_launch(spec))
        for process in processes:
            _wait_http(process)
        yield processes
    finally:
        for process in processes:
            try:
                if on_stop is not None and process.proc.poll() is None:
                    on_stop(process)
            finally:
                stop(process.proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def reference_app(env: dict[str, str], port: int, log: Path) -> Spec:
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "python"), "-m", "bench.reference", "--port", str(port)]
    return Spec("reference app", command, env, url, f"{url}/hello", log)


def orders_api(name: str, env: dict[str, str], port: int, log: Path) -> Spec:
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "orders-service"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    return Spec(name, command, env, url, f"{url}/healthz", log)


# --- memory ---------------------------------------------------------------------------------


def _parent(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (the supervisor and all it runs, a uvicorn master and its
    workers): by parent links, as the processes may start sessions of their own."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    parts = [p.decode(errors="replace") for p in raw.split(b"\0") if p]
    short = [Path(parts[0]).name, *parts[1:]] if parts else []
    return " ".join(short)[:160]


def label(pid: int) -> str:
    """The command line, or for a uvicorn worker (a multiprocessing child, whose own command
    line says nothing) its master's with what the child is."""
    command = command_line(pid)
    if "multiprocessing" not in command:
        return command
    parent = _parent(pid)
    kind = "resource tracker" if "resource_tracker" in command else "worker"
    return f"{command_line(parent) if parent else '?'} [{kind}]"


def memory(roots: dict[str, int]) -> list[dict[str, object]]:
    """RSS of every process under each named root process, largest first."""
    rows: list[dict[str, object]] = []
    for group, root in roots.items():
        for pid in descendants(root):
            rss = rss_mb(pid)
            if rss is None or rss == 0:
                continue  # gone, or a kernel thread
            rows.append(
                {"group": group, "pid": pid, "rss_mb": round(rss, 1), "command": label(pid)}
            )
    return sorted(rows, key=lambda row: -float(row["rss_mb"]))  # type: ignore[arg-type]


# --- what the processes complained about ----------------------------------------------------

_VARIABLE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32,}|\d+"
)


def warnings(logs: list[Path], top: int = 15) -> list[dict[str, object]]:
    """The WARNING and ERROR lines of the JSON logs, counted by service and message (ids and
    numbers blanked out), most frequent first: a fallback taken on every request (a cache
    that fails open) shows here long before it shows in a ratio."""
    counts: dict[tuple[str, str, str], int] = {}
    for log in logs:
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            start = line.find("{")
            if start < 0 or '"level"' not in line:
                continue
            try:
                entry = json.loads(line[start:])
            except ValueError:
                continue
            level = str(entry.get("level", ""))
            if level not in ("WARNING", "ERROR", "CRITICAL"):
                continue
            message = _VARIABLE.sub("#", str(entry.get("message", "")))[:160]
            key = (level, str(entry.get("service", log.stem)), message)
            counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:top]
    return [
        {"count": n, "level": level, "service": service, "message": message}
        for (level, service, message), n in ranked
    ]
