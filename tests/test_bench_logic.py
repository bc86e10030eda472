"""The arithmetic of `make bench` (bench/compare.py, bench/pipeline.py, bench/wrk.py,
bench/common.py, bench/verdict.py): alternation order, per-round ratios and their median, validity,
each target taken from its own comparison, the probe rates, the wrk summary and the result
file. The load itself is proved by `make bench-quick` in CI."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bench import pipeline, wrk
from bench.common import write_report
from bench.compare import SCENARIO, Target, alternate, comparison_table, p99, table
from bench.pipeline import backlog_slope, is_sustained, latency_summary, refined_rate
from bench.procs import warnings
from bench.report import markdown
from bench.verdict import fallbacks, invalid, targets


@dataclass
class Fake:
    rps: float
    requests: int = 100
    p99_ms: float = 10.0
    p50_ms: float = 5.0
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return {"rps": self.rps}


def test_alternate_runs_scenario_then_each_reference_every_round() -> None:
    calls: list[str] = []

    def run(name: str, rps: float) -> Any:
        return lambda: calls.append(name) or Fake(rps)

    alternate("s", run("A", 1), {"B": run("B", 2), "C": run("C", 4)}, rounds=3)

    assert calls == ["A", "B", "C"] * 3


def test_ratio_is_the_median_of_per_round_ratios_not_the_ratio_of_medians() -> None:
    # Scenario and reference drift together round by round (a noisy box).
    a = iter([Fake(100), Fake(400), Fake(90)])
    b = iter([Fake(200), Fake(500), Fake(100)])
    comparison = alternate("s", lambda: next(a), {"ref": lambda: next(b)}, rounds=3)

    assert comparison.ratios("ref") == [0.5, 0.8, 0.9]
    assert comparison.ratio("ref") == 0.8
    # The ratio of the medians would be 100 / 200 = 0.5.
    assert comparison.median_of(SCENARIO, lambda m: m.rps) == 100


def test_p99_ratio_uses_the_latency_metric() -> None:
    a = iter([Fake(1, p99_ms=30), Fake(1, p99_ms=50)])
    b = iter([Fake(1, p99_ms=10), Fake(1, p99_ms=10)])
    comparison = alternate("storm", lambda: next(a), {"alone": lambda: next(b)}, rounds=2)

    assert comparison.ratio("alone", p99) == 4.0


def test_any_failed_answer_in_scenario_or_reference_invalidates_the_comparison() -> None:
    clean = alternate("s", lambda: Fake(10), {"ref": lambda: Fake(10)}, rounds=2)
    throttled = alternate(
        "s", lambda: Fake(10, errors={"status": 1}), {"ref": lambda: Fake(10)}, rounds=2
    )
    broken_ref = alternate(
        "s", lambda: Fake(10), {"ref": lambda: Fake(10, errors={"timeout": 2})}, rounds=1
    )

    assert clean.valid
    assert not throttled.valid
    assert throttled.failed == 2
    assert not broken_ref.valid
    assert not alternate("s", lambda: Fake(1), {"ref": lambda: Fake(1)}, rounds=0).valid


def test_a_run_that_got_no_answer_invalidates_the_comparison() -> None:
    # Every request outlived the run: wrk counts no error, and no success either.
    silent = alternate("s", lambda: Fake(0, requests=0), {"ref": lambda: Fake(5)}, rounds=1)

    assert silent.failed == 0
    assert not silent.valid


def test_a_reference_at_zero_gives_no_ratio_instead_of_a_crash() -> None:
    comparison = alternate("s", lambda: Fake(10), {"ref": lambda: Fake(0)}, rounds=1)

    assert math.isnan(comparison.ratio("ref"))
    assert Target("t", comparison.ratio("ref"), 0.5).status == "invalid"


@pytest.mark.parametrize(
    ("measured", "threshold", "at_most", "valid", "expected"),
    [
        (0.61, 0.6, False, True, "pass"),
        (0.59, 0.6, False, True, "miss"),
        (240.0, 250.0, True, True, "pass"),
        (260.0, 250.0, True, True, "miss"),
        (0.9, 0.6, False, False, "invalid"),
        (None, 0.6, False, True, "invalid"),
    ],
)
def test_target_status(
    measured: float | None, threshold: float, at_most: bool, valid: bool, expected: str
) -> None:
    target = Target("t", measured, threshold, at_most=at_most, valid=valid)

    assert target.status == expected
    assert target.to_json()["status"] == expected
    assert expected in table([target])


def test_backlog_slope_ignores_the_warm_up_and_finds_growth() -> None:
    steady = [(0.0, 0), (1.0, 40), (2.0, 12), (3.0, 11), (4.0, 13), (5.0, 12), (6.0, 11), (7.0, 12)]
    growing = [(float(t), 25 * t) for t in range(10)]

    assert abs(backlog_slope(steady)) < 1
    assert backlog_slope(growing) == pytest.approx(25)
    assert backlog_slope([(0.0, 5)]) == 0.0


def test_sustained_needs_the_full_rate_no_errors_and_a_flat_backlog() -> None:
    assert is_sustained(300, achieved=299, slope=2, failed=0)
    assert not is_sustained(300, achieved=299, slope=20, failed=0)  # falls behind
    assert not is_sustained(300, achieved=250, slope=0, failed=0)  # the load never got there
    assert not is_sustained(300, achieved=300, slope=0, failed=1)


def test_wrk_summary_line_is_read_into_a_result() -> None:
    line = json.dumps(
        {
            "requests": 1500,
            "duration_us": 3_000_000,
            "p50_us": 2500,
            "p90_us": 4000,
            "p99_us": 12000,
            "max_us": 30000,
            "status": 3,
            "timeout": 1,
            "connect": 0,
            "read": 0,
            "write": 0,
        }
    )
    result = wrk.WrkResult.from_done(line)

    assert result.rps == 500
    assert (result.p50_ms, result.p99_ms) == (2.5, 12.0)
    assert result.failed == 4


def test_wrk_script_shares_tokens_and_escapes_bodies(tmp_path: Path) -> None:
    requests = [
        wrk.Request("POST", "/orders/", "tok-a", '{"name": "a \\"b\\""}'),
        wrk.Request("GET", "/orders/1/", "tok-a"),
        wrk.Request("GET", "/hello"),
    ]
    script = wrk.write_script(tmp_path / "s.lua", requests, mode="walk", rate=50).read_text()

    assert script.count('"tok-a"') == 1  # once in TOKENS, referenced by index
    assert 'MODE = "walk"' in script
    assert "RATE = 50.0" in script
    assert "function delay()" in script
    with pytest.raises(ValueError, match="at least one"):
        wrk.write_script(tmp_path / "empty.lua", [])


def test_report_is_written_under_its_start_time_with_nan_as_null(tmp_path: Path) -> None:
    started = datetime(2026, 12, 3, 9, 40, 5, tzinfo=UTC)
    path = write_report({"ratio": float("nan"), "rows": [1.5, float("inf")]}, started, tmp_path)

    assert path.name == "2026-12-03T09-40-05Z.json"
    assert json.loads(path.read_text()) == {"ratio": None, "rows": [1.5, None]}


def test_a_latency_comparison_reports_its_ratio_of_p99_everywhere() -> None:
    with_storm = iter([Fake(50, p99_ms=30), Fake(50, p99_ms=90), Fake(50, p99_ms=20)])
    alone = iter([Fake(50, p99_ms=10), Fake(50, p99_ms=30), Fake(50, p99_ms=20)])
    storm = alternate("storm", lambda: next(with_storm), {"alone": lambda: next(alone)}, 3, p99)

    # Same throughput in every run: a ratio of req/s would read 1.0.
    assert storm.ratio("alone") == 3.0
    assert storm.to_json()["ratio"] == {"alone": 3.0}
    assert storm.to_json()["ratio_of"] == "p99"
    assert "3.00 p99" in comparison_table([storm])


def _results(*comparisons: Any) -> dict[str, Any]:
    return {c.name: c for c in comparisons}


def test_targets_take_each_figure_from_its_own_comparison() -> None:
    def pair(name: str, scenario: list[float], reference: list[float], ref: str) -> Any:
        a, b = iter(scenario), iter(reference)
        return alternate(name, lambda: Fake(next(a)), {ref: lambda: Fake(next(b))}, 3)

    small = "1,000 rows"
    results = _results(
        pair("GET /orders/{id}/ cached, gateway", [60, 70, 80], [100, 100, 100], "/redis"),
        pair("GET /orders/{id}/ cached, direct", [80, 90, 70], [100, 100, 100], "/redis"),
        pair("POST /orders/, gateway", [40, 50, 10], [100, 100, 100], "/insert"),
        # The big table at half, a third and the same speed as the small one.
        pair(
            "scale: cache-miss GET, 1,000,000 rows vs 1,000 rows",
            [50, 30, 90],
            [100, 90, 90],
            small,
        ),
    )
    pipe = {
        "sustained": {
            "sustained_rate": 250,
            "non_2xx": 0,
            "probes": [{}],
            "bounded_by_post": False,
        },
        "latency": {
            "asked_per_s": 100.0,
            "rate_per_s": 99.0,
            "post_errors": 0,
            "unprocessed": 0,
            "processed": {"count": 2000, "p99_ms": 180.0},
        },
    }
    rss = [
        {"group": "reference app", "rss_mb": 300.0, "command": "bench.reference"},
        {"group": "stack", "rss_mb": 120.0, "command": "orders-service serve"},
    ]
    measured = {t.text: t for t in targets(results, pipe, rss)}

    assert measured["Cached GET, gateway / `/redis`"].measured == 0.7
    assert measured["Cached GET, direct / `/redis`"].measured == 0.8
    assert measured["POST /orders/, gateway / `/insert`"].measured == 0.4
    assert measured["POST /orders/, gateway / `/insert`"].status == "pass"
    slowdown = measured["cache-miss GET, 1,000,000 rows vs 1,000 rows (slowdown)"]
    assert slowdown.measured == 2.0  # median of 2, 3 and 1: the small / big per round
    assert slowdown.status == "miss"
    assert measured["Pipeline: highest sustained rate, delay 0"].status == "miss"
    assert measured["Pipeline: POST -> processed_at p99 at 100 orders/s"].status == "pass"
    # The bench's own reference app is not held to the platform's memory target.
    memory = measured["Memory: largest RSS of a platform process after the run"]
    assert (memory.measured, memory.status) == (120.0, "pass")
    # A scenario that never ran (the login storm here) has no figure: invalid, not a pass.
    assert measured["Login storm: cached GET p99 with / without"].status == "invalid"


def test_a_run_is_invalid_for_failed_answers_errors_and_missing_figures_never_for_speed() -> None:
    slow = alternate("slow", lambda: Fake(1), {"ref": lambda: Fake(1000)}, 1)
    throttled = alternate(
        "throttled", lambda: Fake(10, errors={"status": 3}), {"ref": lambda: Fake(10)}, 1
    )
    missed = Target("t", 0.01, 0.6)
    clean_pipe = {
        # Timeouts while probing past the capacity are overload, not an error.
        "sustained": {"failed": 12, "non_2xx": 0},
        "latency": {"post_errors": 0, "unprocessed": 0},
    }

    assert invalid(_results(slow), clean_pipe, [missed], []) == []
    problems = invalid(
        _results(slow, throttled),
        {"sustained": {"non_2xx": 2}, "latency": {"post_errors": 0, "unprocessed": 5}},
        [missed, Target("no figure", None, 1)],
        [{"what": "scale: 1,000,000 rows", "error": "RuntimeError('wrk gave no summary')"}],
    )
    assert problems == [
        "throttled",
        "pipeline: sustained rate",
        "pipeline: latency at a steady rate",
        "scale: 1,000,000 rows: RuntimeError('wrk gave no summary')",
        "no figure for: no figure",
    ]
    # A phase that never produced its part of the pipeline is reported by its error alone.
    assert invalid({}, {}, [], []) == []


@pytest.mark.parametrize(
    ("kept", "failed", "expected"),
    [
        ([100.0, 200.0], 300.0, 250.0),
        ([100.0], 200.0, 150.0),
        ([], 100.0, 50.0),
        ([300.0], 325.0, None),  # one step apart already
        ([100.0, 200.0], 250.0, 225.0),
    ],
)
def test_refined_rate_probes_halfway_to_the_first_rate_that_fell_behind(
    kept: list[float], failed: float, expected: float | None
) -> None:
    assert refined_rate(kept, failed) == expected


def test_pipeline_summary_quantiles_are_in_the_unit_given() -> None:
    values = [float(v) for v in range(1, 101)]  # 1 .. 100 ms

    summary = latency_summary(values)

    assert summary["count"] == 100
    assert summary["median_ms"] == 50.5
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["max_ms"] == 100
    assert latency_summary([]) == {"count": 0}
    assert latency_summary([7.0])["p99_ms"] == 7.0


def test_the_markdown_report_shows_each_target_with_its_rounds_and_every_comparison(
    tmp_path: Path,
) -> None:
    a, b = iter([Fake(60), Fake(70), Fake(80)]), iter([Fake(100), Fake(100), Fake(100)])
    cached = alternate(
        "GET /orders/{id}/ cached, gateway", lambda: next(a), {"/redis": lambda: next(b)}, 3
    )
    measured = targets(_results(cached), {}, [])
    report = {
        "started_at": "2026-12-03T15:00:00+00:00",
        "profile": {"name": "default"},
        "duration_s": 1200.0,
        "machine": {"cpus": 2, "load_average": [3.0, 2.5, 2.0]},
        "api_workers": 2,
        "targets": [t.to_json() for t in measured],
        "scenarios": {cached.name: cached.to_json()},
        "pipeline": {},
        "memory": [],
        "errors": [{"what": "pipeline: latency", "error": "RuntimeError('x')"}],
    }
    path = write_report(report, datetime(2026, 12, 3, 15, 0, tzinfo=UTC), tmp_path)

    text = markdown(json.loads(path.read_text()))

    assert (
        "| Cached GET, gateway / `/redis` | >= 0.6x | 0.70x | 0.60x, 0.70x, 0.80x | **pass** |"
        in text
    )
    assert "| GET /orders/{id}/ cached, gateway | 70 |" in text
    assert "**invalid**" in text  # the targets whose scenario never ran
    assert "pipeline: latency: `RuntimeError('x')`" in text


@dataclass
class FakeLoad:
    """The pipeline's probes without a stack: the API answers at most ``api`` POSTs/s, the
    pipeline processes ``capacity`` orders/s; the backlog sampled grows by the difference."""

    api: float
    capacity: float
    asked: list[tuple[float, float]] = field(default_factory=list)

    def __call__(self, rate: float, seconds: float) -> Any:
        self.asked.append((rate, seconds))
        return wrk.WrkResult(
            int(min(rate, self.api) * seconds), seconds, min(rate, self.api), 1, 1, 1, 1
        )


class FakeBacklog:
    dsn = ""

    def wait_drained(self, since: datetime) -> float:
        return 0.0


def _highest(load: FakeLoad, monkeypatch: pytest.MonkeyPatch, confirm: float = 60) -> Any:
    class Sampler:
        def __init__(self, dsn: str, since: datetime) -> None:
            placed = min(load.asked[-1][0], load.api) if load.asked else 0
            # Sampled after the load: the backlog grows at placed - capacity orders/s.
            self.samples = [(float(t), max(0.0, placed - load.capacity) * t) for t in range(20)]

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(pipeline, "BacklogSampler", Sampler)
    # The sampler is built before the load runs: let it see this step's rate.
    real = pipeline.step

    def step(load_: Any, backlog: Any, rate: float, seconds: float) -> Any:
        load.asked.append((rate, 0.0))
        return real(load_, backlog, rate, seconds)

    monkeypatch.setattr(pipeline, "step", step)
    return pipeline.highest_sustained(load, FakeBacklog(), (100, 200, 300, 400), 15, confirm)


def test_highest_sustained_rate_brackets_the_pipeline_capacity(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = _highest(FakeLoad(api=1000, capacity=260), monkeypatch)

    asked = [p["rate"] for p in result["probes"]]
    assert asked == [100, 200, 300, 250]  # up to the first that falls behind, then halfway
    assert [c["rate"] for c in result["confirms"]] == [250]
    assert result["sustained_rate"] == 250
    assert not result["bounded_by_post"]


def test_an_api_slower_than_the_rate_bounds_the_figure_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = _highest(FakeLoad(api=34, capacity=260), monkeypatch)

    assert [p["rate"] for p in result["probes"]] == [100]  # higher rates would only queue
    assert result["sustained_rate"] == 34
    assert result["bounded_by_post"]
    assert result["asked_rate"] == 100
    measured = {t.text: t for t in targets({}, {"sustained": result}, [])}
    rate = measured["Pipeline: highest sustained rate, delay 0"]
    assert (rate.measured, rate.status) == (34, "miss")
    assert "bounded by POST" in rate.detail


def test_a_pipeline_that_keeps_up_with_none_of_the_rates_is_a_miss_at_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = _highest(FakeLoad(api=1000, capacity=10), monkeypatch)

    assert [p["rate"] for p in result["probes"]] == [100, 50, 25]  # halving, to one step
    assert result["sustained_rate"] == 0
    measured = {t.text: t for t in targets({}, {"sustained": result}, [])}
    assert measured["Pipeline: highest sustained rate, delay 0"].status == "miss"
    assert targets({}, {}, [])[3].status == "invalid"  # never probed: no figure


def test_log_warnings_are_counted_by_message_and_a_fallback_invalidates_the_run(
    tmp_path: Path,
) -> None:
    line = '12:00:00 orders.1  | {"level": "WARNING", "service": "orders", "message": "%s"}'
    stack = tmp_path / "stack.log"
    stack.write_text(
        "\n".join(
            [
                line % "order cache unavailable, using the database",
                line % "order cache unavailable, using the database",
                line % "database unavailable on GET /orders/3f0294c2-412f-4a17-b814-fd6832da790c/",
                line % "database unavailable on GET /orders/9c1b3b4a-930d-43d7-94cd-cb90d265dec4/",
                '{"level": "INFO", "service": "orders", "message": "started"}',
                "not json at all {",
            ]
        )
    )
    (tmp_path / "orders-1000.log").write_text(
        '{"level": "ERROR", "service": "orders", "message": "took 1234 ms"}\n'
    )

    found = warnings([stack, tmp_path / "orders-1000.log", tmp_path / "missing.log"])

    assert [(w["count"], w["message"]) for w in found] == [
        (2, "order cache unavailable, using the database"),
        (2, "database unavailable on GET /orders/#/"),
        (1, "took # ms"),
    ]
    assert len(fallbacks(found)) == 2
    assert fallbacks(found[2:]) == []


def test_a_pipeline_slower_than_the_first_rate_is_found_by_halving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = _highest(FakeLoad(api=1000, capacity=30), monkeypatch)

    assert [p["rate"] for p in result["probes"]] == [100, 50, 25]
    assert result["sustained_rate"] == 25
