"""`make audit`: the locked dependencies (uv.lock, every group) checked by pip-audit against
PyPI's advisory data.

Fails (exit 1) on a known vulnerability that has a fixed release: upgrade it in uv.lock.
A vulnerability without a fix is reported but does not fail. When the advisory service cannot
be reached (a machine that sees only a PyPI mirror), nothing was audited: that is said loudly
and exits 3, so CI can warn without pretending the check passed."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = 3


def verdict(report: dict[str, Any]) -> tuple[int, list[str]]:
    """Exit code and the lines to print, from pip-audit's JSON report."""
    dependencies = report.get("dependencies", [])
    audited = [d for d in dependencies if "skip_reason" not in d]
    lines, fixable = [], 0
    for dep in audited:
        for vuln in dep.get("vulns", []):
            fixes = vuln.get("fix_versions") or []
            fixable += bool(fixes)
            fix = f"fixed in {', '.join(fixes)}" if fixes else "no fix released"
            lines.append(f"{dep['name']} {dep.get('version', '?')}: {vuln.get('id')} ({fix})")
    if dependencies and not audited:
        reason = dependencies[0]["skip_reason"]
        lines.append(
            f"NOT AUDITED: none of the {len(dependencies)} dependencies could be checked "
            f"(the advisory service is unreachable from here: {reason})"
        )
        return UNREACHABLE, lines
    lines.append(f"audited {len(audited)} of {len(dependencies)} locked dependencies")
    return (1 if fixable else 0), lines


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        exported = subprocess.run(
            ["uv", "export", "--frozen", "--no-hashes", "--no-emit-workspace", "--all-groups"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        requirements.write_text(exported)
        result = subprocess.run(
            [
                str(ROOT / ".venv" / "bin" / "pip-audit"),
                *("-r", str(requirements), "--no-deps", "--disable-pip", "--format", "json"),
                *("--progress-spinner", "off"),
            ],
            capture_output=True,
            text=True,
        )
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        print(result.stderr.strip() or "pip-audit gave no report", file=sys.stderr)
        return UNREACHABLE
    code, lines = verdict(report)
    print("\n".join(lines))
    return code


if __name__ == "__main__":
    sys.exit(main())
