"""wrk, driven from Python: each load is a list of requests written into a Lua script, and the
script's ``done()`` hook prints the summary as one JSON line (no parsing of wrk's text).

Three ways to walk the list:

- ``random``: every request picks one at random (cached reads over many ids);
- ``walk``: each request is sent once, in order, by one thread, then wrk stops (cache
  misses, status changes: a request must not repeat);
- with ``rate``: requests leave on a schedule (open loop) instead of as fast as answers come.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Mode = Literal["random", "walk"]

THREADS = 2  # one per core of the box; wrk itself then costs about one core at full speed


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    token: str | None = None
    body: str | None = None
    content_type: str = "application/json"


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    # status: answers >= 400 (wrk's own count); timeout, connect, read, write: socket errors.
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed}

    @classmethod
    def from_done(cls, line: str) -> WrkResult:
        data = json.loads(line)
        seconds = data["duration_us"] / 1e6
        return cls(
            requests=data["requests"],
            seconds=seconds,
            rps=data["requests"] / seconds if seconds else 0.0,
            p50_ms=data["p50_us"] / 1000,
            p90_ms=data["p90_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
            max_ms=data["max_us"] / 1000,
            errors={k: int(data[k]) for k in ("status", "timeout", "connect", "read", "write")},
        )


def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


_CLOCK = """
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
"""

_BODY = """
local threads, counter = {}, 0
function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local reqs, n, sent, answered = {}, 0, 0, 0
function init(args)
  math.randomseed(os.time() + tid * 7919)
  for i, r in ipairs(DATA) do
    if MODE ~= "walk" or (i - 1) % THREADS == tid then
      local headers = {}
      if r[3] ~= nil then headers["Authorization"] = "Bearer " .. TOKENS[r[3]] end
      if r[4] ~= nil then headers["Content-Type"] = r[5] end
      n = n + 1
      reqs[n] = wrk.format(r[1], r[2], headers, r[4])
    end
  end
end

function request()
  sent = sent + 1
  if MODE == "walk" then
    -- Past the end (the last answers are still coming) the last request repeats.
    return reqs[math.min(sent, n)]
  end
  return reqs[math.random(n)]
end

if MODE == "walk" then
  -- wrk's main thread sleeps for the whole -d unless interrupted: once every request was
  -- answered, stop this (only) thread and interrupt the sleep as Ctrl-C would.
  local ffi = require("ffi")
  ffi.cdef[[
  int kill(int pid, int sig);
  int getpid(void);
  ]]
  function response(status, headers, body)
    answered = answered + 1
    if answered == n then
      wrk.thread:stop()
      ffi.C.kill(ffi.C.getpid(), 2)
    end
  end
end

if RATE ~= nil then
  local interval = THREADS * 1000 / RATE  -- ms between two requests of this thread
  local slot = nil
  function delay()
    local now = now_ms()
    -- Behind schedule by more than a second: give up the missed slots instead of bursting.
    if slot == nil or slot < now - 1000 then slot = now end
    slot = slot + interval
    return math.max(0, slot - now)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "status": %d, "timeout": %d, "connect": %d, ' ..
    '"read": %d, "write": %d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.status, e.timeout, e.connect, e.read, e.write))
end
"""


def threads_for(mode: Mode) -> int:
    # A walk ends when its one thread has every answer (see the Lua): one thread only.
    return 1 if mode == "walk" else THREADS


def write_script(
    path: Path,
    requests: list[Request],
    *,
    mode: Mode = "random",
    rate: float | None = None,
) -> Path:
    if not requests:
        raise ValueError("a load needs at least one request")
    threads = threads_for(mode)
    tokens: dict[str, int] = {}
    rows = []
    for r in requests:
        credential = "nil"  # the index of its token in TOKENS, or none
        if r.token is not None:
            credential = str(tokens.setdefault(r.token, len(tokens) + 1))
        body = "nil" if r.body is None else _lua_string(r.body)
        rows.append(
            f"{{{_lua_string(r.method)}, {_lua_string(r.path)}, {credential}, {body}, "
            f"{_lua_string(r.content_type)}}}"
        )
    header = [
        f"MODE = {_lua_string(mode)}",
        f"THREADS = {threads}",
        f"RATE = {'nil' if rate is None else repr(float(rate))}",
        "TOKENS = {" + ", ".join(_lua_string(t) for t in tokens) + "}",
        "DATA = {\n" + ",\n".join(rows) + "\n}",
    ]
    path.write_text("\n".join(header) + "\n" + (_CLOCK if rate else "") + _BODY)
    return path


def run(
    base_url: str,
    script: Path,
    *,
    seconds: float,
    connections: int,
    mode: Mode = "random",
    timeout_s: float = 5.0,
) -> WrkResult:
    """One wrk run. ``walk`` scripts stop by themselves once every request was answered;
    ``seconds`` is then only the upper bound."""
    threads = threads_for(mode)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{max(connections, threads)}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        f"{max(1, round(timeout_s))}s",
        "-s",
        str(script),
        base_url,
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, check=False, timeout=seconds + 60
    )
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            return WrkResult.from_done(line.removeprefix("BENCH_JSON "))
    raise RuntimeError(
        f"wrk gave no summary (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
    )
