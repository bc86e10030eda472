"""scripts/supervise.py, `make run`'s supervisor, on a tiny Procfile: a killed process comes
back with back-off while the others keep running; SIGINT/SIGTERM stop everything gracefully."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.stack import ROOT

SUPERVISE = ROOT / "scripts" / "supervise.py"
sys.path.insert(0, str(SUPERVISE.parent))
import supervise  # noqa: E402


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (the supervisor reaps its own children).
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[-1][0] != "Z"


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Supervised:
    def __init__(self, proc: subprocess.Popen[bytes], status: Path, log: Path) -> None:
        self.proc, self.status_path, self.log_path = proc, status, log

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_path.read_text())["processes"])
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def pid(self, name: str) -> int | None:
        entry = self.status().get(name) or {}
        return entry.get("pid")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def supervised(tmp_path: Path, procfile: str, *args: str) -> Iterator[Supervised]:
    (tmp_path / "Procfile").write_text(procfile)
    status, log = tmp_path / "status.json", tmp_path / "out.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, SUPERVISE, "-f", "Procfile", "--status-file", status, *args],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Supervised(proc, status, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_killed_process_comes_back_and_the_others_keep_running(tmp_path: Path) -> None:
    procfile = "one: sleep 300\ntwo: python3 -u -c 'import time; print(\"two up\"); time.sleep(99)'"
    with supervised(tmp_path, procfile, "--backoff-initial", "0.2") as sup:
        one = _wait(lambda: sup.pid("one"), 20, "one to start")
        two = _wait(lambda: sup.pid("two"), 20, "two to start")
        _wait(lambda: "two.1" in sup.log() and "two up" in sup.log(), 20, "two's prefixed output")

        os.kill(one, signal.SIGKILL)
        new_one = _wait(lambda: (p := sup.pid("one")) and p != one and p, 20, "one to restart")

        assert _alive(new_one)
        assert sup.pid("two") == two, "the other process was restarted"
        assert _alive(two)
        assert sup.status()["one"]["restarts"] == 1
        assert "one exited (signal SIGKILL)" in sup.log()

        sup.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert sup.proc.wait(timeout=20) == 0
        assert not _alive(new_one)
        assert not _alive(two)
        assert "all processes stopped" in sup.log()


def test_a_killed_process_whose_children_hold_its_output_comes_back_without_them(
    tmp_path: Path,
) -> None:
    # As uvicorn's master with its workers: the children share the leader's stdout.
    procfile = "api: sh -c 'sleep 300 & sleep 300 & wait'\n"
    with supervised(tmp_path, procfile, "--backoff-initial", "0.2") as sup:
        leader = _wait(lambda: sup.pid("api"), 20, "api to start")
        _wait(lambda: len(_children(leader)) == 2, 20, "api's children")
        children = _children(leader)

        os.kill(leader, signal.SIGKILL)
        new = _wait(lambda: (p := sup.pid("api")) and p != leader and p, 5, "api to restart")

        assert _alive(new)
        assert sup.status()["api"]["restarts"] == 1
        _wait(lambda: not any(_alive(child) for child in children), 5, "the orphans to die")
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(timeout=20) == 0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(child) for child in text.split()]


def test_a_process_that_keeps_failing_waits_longer_each_time_up_to_the_cap(
    tmp_path: Path,
) -> None:
    args = ("--backoff-initial", "0.1", "--backoff-max", "0.4", "--stable-after", "60")
    with supervised(tmp_path, "flaky: sh -c 'exit 3'\nsteady: sleep 300\n", *args) as sup:
        steady = _wait(lambda: sup.pid("steady"), 20, "steady to start")
        _wait(lambda: sup.status().get("flaky", {}).get("restarts", 0) >= 5, 40, "5 restarts")
        delays = [
            line.split("restarting in ")[1].split("s")[0]
            for line in sup.log().splitlines()
            if "flaky exited (exit code 3)" in line
        ]
        assert delays[:5] == ["0.1", "0.2", "0.4", "0.4", "0.4"]
        assert sup.pid("steady") == steady
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(timeout=20) == 0


def test_sigterm_is_forwarded_and_in_flight_work_is_waited_for(tmp_path: Path) -> None:
    done = tmp_path / "finished"
    # A process that needs a second to finish its work after SIGTERM.
    script = tmp_path / "slow.py"
    script.write_text(
        "import pathlib, signal, sys, time\n"
        "def stop(*_):\n"
        "    time.sleep(1)\n"
        "    pathlib.Path(sys.argv[1]).write_text('done')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    procfile = f"slow: python3 {script} {done}\nother: sleep 300\n"
    with supervised(tmp_path, procfile) as sup:
        _wait(lambda: "ready" in sup.log(), 20, "slow to start")
        started = time.monotonic()
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(timeout=20) == 0
        assert time.monotonic() - started >= 0.9, "the supervisor did not wait for its work"
        assert done.read_text() == "done"
        assert "slow stopped (exit code 0)" in sup.log()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    procfile = (
        "stubborn: python3 -c 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print(1, flush=True); time.sleep(300)'"
    )
    with supervised(tmp_path, procfile, "--grace", "1") as sup:
        pid = _wait(lambda: sup.pid("stubborn"), 20, "stubborn to start")
        _wait(lambda: "stubborn.1 | 1" in sup.log().replace("  ", " "), 20, "its output")
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(timeout=20) == 0
        assert not _alive(pid)
        assert "still running after 1s; killing it" in sup.log()


def test_a_process_that_ran_stably_restarts_at_once_and_backs_off_when_it_keeps_failing(
    tmp_path: Path,
) -> None:
    # Runs 1.5 s (stable after 1 s) the first time, then fails at once: 0 s, then 0.2, 0.4.
    marker = tmp_path / "ran-once"
    procfile = f"api: sh -c 'if [ -e {marker} ]; then exit 3; fi; touch {marker}; sleep 1.5'\n"
    args = ("--backoff-initial", "0.2", "--backoff-max", "5", "--stable-after", "1")
    with supervised(tmp_path, procfile, *args) as sup:
        _wait(lambda: sup.status().get("api", {}).get("restarts", 0) >= 3, 30, "3 restarts")
        delays = [
            line.split("restarting in ")[1].split("s")[0]
            for line in sup.log().splitlines()
            if "api exited" in line
        ]
        assert delays[:3] == ["0.0", "0.2", "0.4"], sup.log()
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(timeout=20) == 0


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (6, 30.0), (50, 30.0)],
)
def test_backoff_doubles_up_to_the_cap(failures: int, expected: float) -> None:
    assert supervise.backoff_delay(failures, 1.0, 30.0) == expected


def test_procfile_and_env_file_parsing() -> None:
    assert supervise.parse_procfile("# c\nweb: run --port ${P:-1}\n\nw: x: y\n") == {
        "web": "run --port ${P:-1}",
        "w": "x: y",
    }
    assert supervise.parse_env_file("A=1\n# no\nexport B='two words'\nC=\"x=y\"\n") == {
        "A": "1",
        "B": "two words",
        "C": "x=y",
    }
