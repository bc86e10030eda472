"""How `make bench` turns runs into figures: alternated rounds, per-round ratios and their
median, validity, and the targets of issue 9 with pass/miss.

The box is shared and noisy, so a scenario is never compared with a reference measured minutes
apart: each round runs the scenario and right after it its references (A B A B A B), a ratio is
taken per round, and the median of those ratios is reported."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

SCENARIO = "scenario"


class Measurement(Protocol):
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float

    @property
    def failed(self) -> int: ...

    def to_json(self) -> dict[str, Any]: ...


Metric = Callable[[Measurement], float]


def throughput(m: Measurement) -> float:
    return m.rps


def p99(m: Measurement) -> float:
    return m.p99_ms


@dataclass
class Comparison:
    """Rounds of one scenario and its references; ``rounds[i][SCENARIO]`` and
    ``rounds[i][reference]`` were measured back to back."""

    name: str
    references: list[str]
    rounds: list[dict[str, Measurement]] = field(default_factory=list)
    note: str = ""
    seconds: float = 0.0  # wall time of all its rounds
    # What the ratio compares: req/s (scenario / reference, higher is better) unless said
    # otherwise (the login storm compares p99 latencies).
    metric: Metric = throughput
    # Around the run: the database connections left free when it started; an earlier
    # attempt that was invalid (a run is tried again once, see bench/run.py).
    context: dict[str, Any] = field(default_factory=dict)

    def ratios(self, reference: str, metric: Metric | None = None) -> list[float]:
        metric = metric or self.metric
        out = []
        for round_ in self.rounds:
            base = metric(round_[reference])
            out.append(metric(round_[SCENARIO]) / base if base else float("nan"))
        return out

    def ratio(self, reference: str | None = None, metric: Metric | None = None) -> float:
        return median(self.ratios(reference or self.references[0], metric))

    @property
    def failed(self) -> int:
        """Every answer that was not a success, in the scenario or a reference: any one of
        them (a 429 included) makes the comparison invalid."""
        return sum(m.failed for round_ in self.rounds for m in round_.values())

    @property
    def valid(self) -> bool:
        """No failed answer, and every run got answers at all (a run whose requests all
        outlived it counts none: that is no measurement)."""
        answered = all(m.requests > 0 for round_ in self.rounds for m in round_.values())
        return bool(self.rounds) and answered and self.failed == 0

    def median_of(self, name: str, metric: Metric) -> float:
        return median([metric(round_[name]) for round_ in self.rounds])

    def to_json(self) -> dict[str, Any]:
        return {
            "references": self.references,
            "ratio_of": self.metric.__name__,
            "ratios": {ref: self.ratios(ref) for ref in self.references},
            "ratio": {ref: self.ratio(ref) for ref in self.references},
            "median_rps": {
                name: self.median_of(name, throughput) for name in [SCENARIO, *self.references]
            },
            "median_p99_ms": {
                name: self.median_of(name, p99) for name in [SCENARIO, *self.references]
            },
            "failed": self.failed,
            "valid": self.valid,
            "note": self.note,
            "seconds": self.seconds,
            "context": self.context,
            "rounds": [{k: m.to_json() for k, m in r.items()} for r in self.rounds],
        }


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def alternate(
    name: str,
    scenario: Callable[[], Measurement],
    references: Mapping[str, Callable[[], Measurement]],
    rounds: int,
    metric: Metric = throughput,
) -> Comparison:
    """Run ``scenario`` and each reference in turn, ``rounds`` times (A B A B ...)."""
    comparison = Comparison(name, list(references), metric=metric)
    started = time.monotonic()
    for _ in range(rounds):
        measured = {SCENARIO: scenario()}
        for ref, run in references.items():
            measured[ref] = run()
        comparison.rounds.append(measured)
    comparison.seconds = time.monotonic() - started
    return comparison


Status = Literal["pass", "miss", "invalid"]


@dataclass
class Target:
    """One target of issue 9: ``measured`` against ``threshold`` (at least, or at most)."""

    text: str
    measured: float | None
    threshold: float
    at_most: bool = False
    valid: bool = True
    unit: str = "x"
    detail: str = ""
    per_round: list[float] = field(default_factory=list)  # the figures the median is of

    @property
    def status(self) -> Status:
        if not self.valid or self.measured is None or self.measured != self.measured:  # NaN
            return "invalid"
        ok = self.measured <= self.threshold if self.at_most else self.measured >= self.threshold
        return "pass" if ok else "miss"

    def goal(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.threshold:g}{self.unit}"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.text,
            "goal": self.goal(),
            "measured": self.measured,
            "unit": self.unit,
            "status": self.status,
            "detail": self.detail,
            "per_round": self.per_round,
        }


def table(targets: list[Target]) -> str:
    width = max([len(t.text) for t in targets] + [6])
    lines = [f"{'target':{width}}  {'goal':>12}  {'measured':>10}  result", "-" * (width + 34)]
    for t in targets:
        measured = "-" if t.measured is None else f"{t.measured:.2f}{t.unit}"
        lines.append(f"{t.text:{width}}  {t.goal():>12}  {measured:>10}  {t.status}")
    return "\n".join(lines)


def comparison_table(comparisons: list[Comparison], *, header: bool = True) -> str:
    """Per scenario: its median req/s and p99, then one line per reference with the
    reference's median req/s and the median of the per-round ratios (of req/s, or of p99
    where the comparison is on latency: marked "p99")."""
    lines = []
    if header:
        lines.append(
            f"{'scenario':58} {'req/s':>7} {'p99 ms':>8} {'failed':>6}  "
            f"{'reference':>14} {'req/s':>7} {'ratio':>6}"
        )
    for c in comparisons:
        for i, ref in enumerate(c.references):
            own = (
                f"{c.name:58} {c.median_of(SCENARIO, throughput):7.0f} "
                f"{c.median_of(SCENARIO, p99):8.1f} {c.failed:6d}"
                if i == 0
                else " " * 82
            )
            of = "" if c.metric is throughput else f" {c.metric.__name__}"
            lines.append(
                f"{own}  {ref:>14} {c.median_of(ref, throughput):7.0f} {c.ratio(ref):6.2f}{of}"
            )
    return "\n".join(lines)
