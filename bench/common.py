"""What both benchmarks share: the README's order and where their results are written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.stack import ROOT

ORDER = {
    "items": [
        {"name": "Laptop", "quantity": 1, "price": "400.00"},
        {"name": "Mouse", "quantity": 2, "price": "25.50"},
    ],
    "total_price": "451.00",
}


def save_results(name: str, results: Any) -> None:
    out = ROOT / ".run" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out.relative_to(ROOT)}")


RESULTS = ROOT / "bench" / "results"


def write_report(report: dict[str, Any], started: datetime, directory: Path = RESULTS) -> Path:
    """``bench/results/<UTC start time>.json``; names sort by time, a run never overwrites
    another."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{started.astimezone(UTC).strftime('%Y-%m-%dT%H-%M-%SZ')}.json"
    path.write_text(json.dumps(_finite(report), indent=2, default=str, allow_nan=False) + "\n")
    return path


def _finite(value: Any) -> Any:
    """NaN and infinities (a ratio over nothing) become null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
