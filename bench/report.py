"""One `make bench` result file as Markdown, for docs/performance.md: the figures are copied
by this, not by hand. ``python -m bench.report [bench/results/<time>.json]`` (the latest by
default) prints the targets, every comparison, the pipeline probes and the largest processes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS


def _number(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit == "x":
        return f"{value:.2f}x"
    return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:.1f}{unit}"


def _rounds(values: list[float | None], unit: str) -> str:
    return ", ".join(_number(v, unit) for v in values)


def targets(report: dict[str, Any]) -> str:
    lines = [
        "| target | goal | measured (median) | per round | result |",
        "|---|---|---|---|---|",
    ]
    for t in report["targets"]:
        measured = _number(t["measured"], t["unit"])
        detail = f" ({t['detail']})" if t.get("detail") else ""
        lines.append(
            f"| {t['target']}{detail} | {t['goal']} | {measured} | "
            f"{_rounds(t.get('per_round', []), t['unit'])} | **{t['status']}** |"
        )
    return "\n".join(lines)


def scenarios(report: dict[str, Any]) -> str:
    lines = [
        "| scenario | req/s | p99 ms | reference | ref req/s | ref p99 ms | ratio | per round "
        "| valid |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report["scenarios"].items():
        of = "" if c.get("ratio_of", "throughput") == "throughput" else f" of {c['ratio_of']}"
        for i, ref in enumerate(c["references"]):
            own = (
                f"{name} | {c['median_rps']['scenario']:,.0f} | "
                f"{c['median_p99_ms']['scenario']:,.1f}"
                if i == 0
                else " | |"
            )
            valid = ("yes" if c["valid"] else f"**no** ({c['failed']} failed)") if i == 0 else ""
            lines.append(
                f"| {own} | {ref} | {c['median_rps'][ref]:,.0f} | "
                f"{c['median_p99_ms'][ref]:,.1f} | {_number(c['ratio'][ref], 'x')}{of} | "
                f"{_rounds(c['ratios'][ref], 'x')} | {valid} |"
            )
    return "\n".join(lines)


def pipeline(report: dict[str, Any]) -> str:
    pipe = report.get("pipeline", {})
    lines = []
    sustained = pipe.get("sustained")
    if sustained:
        lines += [
            "| orders/s asked | for | achieved | backlog slope | backlog max | failed | |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind in ("probes", "confirms"):
            for p in sustained[kind]:
                lines.append(
                    f"| {p['rate']:g} ({kind[:-1]}) | {p['seconds']:g} s | "
                    f"{p['achieved_rps']:.0f}/s | {p['backlog_slope_per_s']:+.1f}/s | "
                    f"{p['backlog_max']} | {p['failed']} | "
                    f"{'sustained' if p['sustained'] else 'falls behind'} |"
                )
    latency = pipe.get("latency")
    if latency:
        lines += [
            "",
            f"At {latency['rate_per_s']:.1f} orders/s ({latency['orders']} orders, "
            f"{latency['post_errors']} failed POSTs, {latency['unprocessed']} never processed):",
            "",
            "| | n | median ms | p90 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|",
        ]
        for key, label in (
            ("post", "POST /orders/ answered"),
            ("processed", "POST → `processed_at`"),
            ("visible", "POST → visible in GET"),
        ):
            row = latency[key]
            if row.get("count"):
                lines.append(
                    f"| {label} | {row['count']} | {row['median_ms']:.1f} | "
                    f"{row['p90_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.1f} |"
                )
    return "\n".join(lines)


def memory(report: dict[str, Any], top: int = 12) -> str:
    lines = ["| RSS MB | group | process |", "|---|---|---|"]
    for row in report["memory"][:top]:
        lines.append(f"| {row['rss_mb']:.1f} | {row['group']} | `{row['command']}` |")
    return "\n".join(lines)


def markdown(report: dict[str, Any], source: str = "") -> str:
    machine = report["machine"]
    load = ", ".join(f"{x:.1f}" for x in machine["load_average"])
    head = (
        f"Run started {report['started_at']}, profile `{report['profile']['name']}`, "
        f"{report['duration_s'] / 60:.0f} min; {machine['cpus']} CPUs, load average at the end "
        f"{load}; {report['api_workers']} worker processes per API. "
        + (f"Result file: `{source}`." if source else "")
    )
    errors = report.get("errors") or []
    parts = [head, "### Targets", targets(report), "### Every comparison", scenarios(report)]
    parts += ["### Pipeline", pipeline(report), "### Memory (largest)", memory(report)]
    if errors:
        parts += ["### Errors", "\n".join(f"- {e['what']}: `{e['error']}`" for e in errors)]
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", nargs="?", type=Path, help="a result file (default: the latest)")
    args = parser.parse_args()
    path: Path = args.path or max(RESULTS.glob("*.json"))
    source = path.resolve()
    root = RESULTS.parent.parent
    shown = source.relative_to(root) if source.is_relative_to(root) else source
    print(markdown(json.loads(path.read_text()), str(shown)))


if __name__ == "__main__":
    main()
