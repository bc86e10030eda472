"""What both benchmarks share: the README's order and where their results are written."""

from __future__ import annotations

import json
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
