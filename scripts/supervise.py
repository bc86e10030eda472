#!/usr/bin/env python3
"""Run the processes of a Procfile and keep them running: `make run`'s supervisor.

A process that exits (crash, SIGKILL, OOM) is started again while the others keep serving — the
restart policy Kubernetes applies to a pod's containers: at once when it had been running for
``--stable-after`` seconds (one death of a healthy process: every second it is down is a second
of 503s), then after a back-off that doubles with each further quick failure
(``--backoff-initial`` up to ``--backoff-max``), so a crash loop does not spin.
SIGINT (Ctrl-C) or SIGTERM stops everything: each process gets SIGTERM, has ``--grace``
seconds to finish its in-flight work, and is then killed with its whole process group.
A second Ctrl-C kills at once.

Output is prefixed per process as honcho does (``08:01:02 worker.1 | ...``), so logs read the
same. ``--status-file`` keeps a JSON map of each process's pid and restart count (the chaos
tests read it to find whom to kill).

Each process runs in its own session: a Ctrl-C in the terminal reaches only the supervisor, which
then stops the processes in order, and a process's children (Celery's prefork pool, nginx's
workers) are killed with it when it dies. The Procfile command runs through ``/bin/sh -c
'exec …'`` so ``${VAR:-default}`` expands and the pid is the program's own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from order_common.aio import RetryPolicy

_PR_SET_PDEATHSIG = 1


def parse_procfile(text: str) -> dict[str, str]:
    processes: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise ValueError(f"not a Procfile line: {raw!r}")
        processes[name.strip()] = command.strip()
    return processes


def parse_env_file(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def backoff_delay(failures: int, initial: float, maximum: float) -> float:
    """The wait before restart number ``failures`` (1, 2, …) of a run of quick failures: the
    repo's one back-off policy. None yet (a process that had been running stably): no wait."""
    if failures == 0:
        return 0.0
    return RetryPolicy(base_delay=initial, max_delay=maximum).delay(failures)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies, so a killed supervisor
    leaves no orphan serving on its ports."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Process:
    name: str
    command: str
    pid: int | None = None
    restarts: int = 0
    state: str = "starting"
    proc: asyncio.subprocess.Process | None = field(default=None, repr=False)


class Supervisor:
    def __init__(
        self,
        processes: dict[str, str],
        env: dict[str, str],
        *,
        backoff_initial: float,
        backoff_max: float,
        stable_after: float,
        grace: float,
        status_file: Path | None,
        cwd: Path,
    ) -> None:
        self.processes = [Process(name, command) for name, command in processes.items()]
        self.env = env
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.grace = grace
        self.status_file = status_file
        self.cwd = cwd
        self.stopping = asyncio.Event()
        self.width = max(len(p.name) for p in self.processes) + 2
        self._pumps: set[asyncio.Task[None]] = set()

    # output
    def emit(self, name: str, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        sys.stdout.write(f"{stamp} {name.ljust(self.width)} | {line}\n")
        sys.stdout.flush()

    def say(self, line: str) -> None:
        self.emit("system", line)

    async def _pump(self, label: str, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line longer than the reader's limit: pass it on in pieces
                raw = await stream.read(1 << 16)
            if not raw:
                return
            self.emit(label, raw.decode(errors="replace").rstrip("\n"))

    def write_status(self) -> None:
        if self.status_file is None:
            return
        status = {
            "supervisor": os.getpid(),
            "processes": {
                p.name: {"pid": p.pid, "restarts": p.restarts, "state": p.state}
                for p in self.processes
            },
        }
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        tmp.replace(self.status_file)

    # one process
    async def _start(self, process: Process) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh",
            "-c",
            f"exec {process.command}",
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            limit=1 << 20,
        )
        assert proc.stdout is not None
        pump = asyncio.create_task(self._pump(f"{process.name}.1", proc.stdout))
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)
        process.proc, process.pid, process.state = proc, proc.pid, "running"
        self.write_status()
        self.say(f"{process.name} started (pid {proc.pid})")
        return proc

    async def keep_running(self, process: Process) -> None:
        failures = 0
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                proc = await self._start(process)
            except OSError as exc:
                self.say(f"{process.name} could not start: {exc}")
                returncode: int | None = None
            else:
                if self.stopping.is_set():  # started while the others were being stopped
                    self._terminate(process)
                returncode = await _exited(proc)
                _kill_group(proc.pid, signal.SIGKILL)  # what it left behind dies with it
            ran = time.monotonic() - started
            process.pid, process.state = None, "exited"
            if self.stopping.is_set():
                self.say(f"{process.name} stopped ({_describe(returncode)})")
                break
            failures = 0 if ran >= self.stable_after else failures + 1
            delay = backoff_delay(failures, self.backoff_initial, self.backoff_max)
            process.restarts += 1
            process.state = "backoff"
            self.write_status()
            self.say(
                f"{process.name} exited ({_describe(returncode)}) after {ran:.1f}s; "
                f"restarting in {delay:.1f}s (restart {process.restarts})"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
        self.write_status()

    # everything
    def _terminate(self, process: Process) -> None:
        if process.proc is not None and process.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.proc.send_signal(signal.SIGTERM)

    async def stop_all(self, keepers: list[asyncio.Task[None]]) -> None:
        for process in self.processes:
            self._terminate(process)
        _, pending = await asyncio.wait(keepers, timeout=self.grace)
        if pending:
            for process in self.processes:
                if process.pid is not None:
                    self.say(f"{process.name} still running after {self.grace:.0f}s; killing it")
                    _kill_group(process.pid, signal.SIGKILL)
            await asyncio.wait(pending)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        interrupted = 0

        def on_signal(signum: int) -> None:
            nonlocal interrupted
            interrupted += 1
            if interrupted == 1:
                self.say(f"{signal.Signals(signum).name} received; stopping every process")
                self.stopping.set()
            else:
                self.say("second signal; killing every process")
                for process in self.processes:
                    if process.pid is not None:
                        _kill_group(process.pid, signal.SIGKILL)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        keepers = [asyncio.create_task(self.keep_running(p)) for p in self.processes]
        await self.stopping.wait()
        await self.stop_all(keepers)
        # Output still in the pipes (a last log line) is worth a moment, not a hang.
        if self._pumps:
            await asyncio.wait(self._pumps, timeout=2)
        self.say("all processes stopped")
        return 0


async def _exited(proc: asyncio.subprocess.Process) -> int:
    """The exit code of ``proc`` once it has exited. Not ``proc.wait()``: asyncio wakes that
    only when the process's pipes are closed as well, and the children of a killed process
    (uvicorn's workers after their master got SIGKILL) keep its stdout open, so it would never
    return: the dead process would not be restarted while its orphans went on serving."""
    while proc.returncode is None:  # noqa: ASYNC110 (no event is set at exit but wait's)
        await asyncio.sleep(0.1)
    return proc.returncode


def _kill_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "not started"
    if returncode < 0:
        return f"signal {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="supervise", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only these processes (default: all)")
    parser.add_argument("-f", "--procfile", default="Procfile", type=Path)
    parser.add_argument(
        "-e", "--env", action="append", default=[], type=Path, help="env file(s) to read"
    )
    parser.add_argument("--backoff-initial", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--backoff-max", type=float, default=30.0, metavar="SECONDS")
    parser.add_argument(
        "--stable-after",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="a process that ran this long restarts at once (then backs off if it fails again)",
    )
    parser.add_argument(
        "--grace", type=float, default=20.0, metavar="SECONDS", help="SIGTERM to SIGKILL"
    )
    parser.add_argument("--status-file", type=Path, default=None)
    parser.add_argument("--no-colour", action="store_true", help="accepted for honcho parity")
    args = parser.parse_args(argv)

    processes = parse_procfile(args.procfile.read_text())
    if args.names:
        unknown = set(args.names) - set(processes)
        if unknown:
            parser.error(f"not in {args.procfile}: {', '.join(sorted(unknown))}")
        processes = {name: processes[name] for name in args.names}
    env = dict(os.environ)
    env_files = args.env or ([Path(".env")] if Path(".env").exists() else [])
    for path in env_files:
        env.update(parse_env_file(path.read_text()))
    env.setdefault("PYTHONUNBUFFERED", "1")
    supervisor = Supervisor(
        processes,
        env,
        backoff_initial=args.backoff_initial,
        backoff_max=args.backoff_max,
        stable_after=args.stable_after,
        grace=args.grace,
        status_file=args.status_file,
        cwd=Path.cwd(),
    )
    return asyncio.run(supervisor.run())


if __name__ == "__main__":
    sys.exit(main())
