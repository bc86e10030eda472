"""What a `make bench` run concludes: each target of issue 9 beside its measured figure, and
whether the run is a measurement at all (``invalid``, ``fallbacks``) -- never whether a target
was met: a miss is a result, an invalid run is not."""

from __future__ import annotations

from typing import Any

from bench.compare import Comparison, Target, median

REFERENCE = "reference app"


def _rss_target(rows: list[dict[str, Any]]) -> Target:
    # The reference app is the bench's, not the platform's: reported, not held to the target.
    ours = [row for row in rows if row["group"] != REFERENCE]
    top = ours[0] if ours else {"rss_mb": None, "command": ""}
    return Target(
        "Memory: largest RSS of a platform process after the run",
        float(top["rss_mb"]) if top["rss_mb"] is not None else None,
        150,
        at_most=True,
        unit=" MB",
        detail=str(top["command"]),
    )


def targets(
    results: dict[str, Comparison], pipe: dict[str, Any], rss: list[dict[str, Any]]
) -> list[Target]:
    def ratio(name: str, ref: str, text: str, threshold: float) -> Target:
        c = results.get(name)
        return Target(
            text,
            c.ratio(ref) if c else None,
            threshold,
            valid=bool(c and c.valid),
            per_round=c.ratios(ref) if c else [],
        )

    def slowdown(name: str, text: str) -> Target:
        # "within 1.5x": the big table may cost at most 1.5x the small one: the median of
        # the per-round small / big throughputs.
        c = results.get(name)
        per_round = [1 / x for x in c.ratios(c.references[0]) if x] if c else []
        value = median(per_round) if per_round else None
        return Target(
            text, value, 1.5, at_most=True, valid=bool(c and c.valid), per_round=per_round
        )

    out = [
        ratio("GET /orders/{id}/ cached, gateway", "/redis", "Cached GET, gateway / `/redis`", 0.6),
        ratio("GET /orders/{id}/ cached, direct", "/redis", "Cached GET, direct / `/redis`", 0.75),
        ratio("POST /orders/, gateway", "/insert", "POST /orders/, gateway / `/insert`", 0.4),
    ]
    sustained = pipe.get("sustained", {})
    detail = ""
    if sustained.get("bounded_by_post"):
        detail = f"bounded by POST /orders/: {sustained['asked_rate']:g}/s asked"
    elif sustained.get("top_of_range"):
        detail = "a lower bound: the top of the probed range"
    out.append(
        Target(
            "Pipeline: highest sustained rate, delay 0",
            sustained.get("sustained_rate"),
            300,
            unit=" orders/s",
            # 0 is a figure (it kept up with none of the rates probed): a miss, not invalid.
            valid=bool(sustained.get("probes")) and sustained.get("non_2xx", 1) == 0,
            detail=detail,
        )
    )
    latency = pipe.get("latency", {})
    processed = latency.get("processed", {})
    asked, placed = latency.get("asked_per_s", 0), latency.get("rate_per_s", 0)
    out.append(
        Target(
            f"Pipeline: POST -> processed_at p99 at {asked:g} orders/s",
            processed.get("p99_ms"),
            250,
            at_most=True,
            unit=" ms",
            valid=bool(processed.get("count"))
            and latency.get("post_errors", 1) == 0
            and latency.get("unprocessed", 1) == 0,
            detail=f"the API answered {placed:.0f} POSTs/s: the rest is their queue"
            if asked and placed < 0.95 * asked
            else "",
        )
    )
    storm = results.get("login storm: cached GET p99 (gateway)")
    out.append(
        Target(
            "Login storm: cached GET p99 with / without",
            storm.ratio("alone") if storm else None,
            2,
            at_most=True,
            valid=bool(storm and storm.valid),
            per_round=storm.ratios("alone") if storm else [],
        )
    )
    for name in results:
        # The targets' two read scenarios; the 100K-order user's list is reported beside them.
        if name.startswith(("scale: cache-miss GET,", "scale: list first page,")):
            out.append(slowdown(name, name.removeprefix("scale: ") + " (slowdown)"))
    out.append(_rss_target(rss))
    return out


def fallbacks(complaints: list[dict[str, Any]]) -> list[str]:
    """A Redis or database the stack found unavailable: the requests were answered (the cache
    and the limiter fail open) but not by the path a scenario means to measure."""
    return [
        f"the stack fell back {w['count']} times: {w['service']}: {w['message'][:120]}"
        for w in complaints
        if "unavailable" in str(w["message"])
    ]


def invalid(
    comparisons: dict[str, Comparison],
    pipe: dict[str, Any],
    measured: list[Target],
    errors: list[dict[str, str]],
) -> list[str]:
    """Why the run is not a measurement: comparisons with a failed answer, a pipeline phase
    with a failed POST or an order never processed, a phase that raised, a target that got
    no valid figure. Never a missed target."""
    out = [c.name for c in comparisons.values() if not c.valid]
    sustained, latency = pipe.get("sustained"), pipe.get("latency")
    if sustained is not None and sustained["non_2xx"]:
        out.append("pipeline: sustained rate")
    if latency is not None and (latency["post_errors"] or latency["unprocessed"]):
        out.append("pipeline: latency at a steady rate")
    out += [f"{e['what']}: {e['error'][:200]}" for e in errors]
    out += [f"no figure for: {t.text}" for t in measured if t.status == "invalid"]
    return out
