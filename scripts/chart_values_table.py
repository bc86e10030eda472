"""Write (or check) the values table of helm/order-platform/README.md from values.yaml: every
setting with its default and the comment written above it (or after it on the same line), the
way helm-docs does it (helm-docs itself is not packaged for PyPI, npm or Debian).

    python scripts/chart_values_table.py           # rewrite the table in the README
    python scripts/chart_values_table.py --check   # exit 1 when the README is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "helm" / "order-platform"
START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?P<rest>.*)$")
MAX_DEFAULT = 70


def _inline_comment(rest: str) -> tuple[str, str]:
    """(value text, comment) of what follows `key:`; a # inside quotes is not a comment."""
    quote = ""
    for i, char in enumerate(rest):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or rest[i - 1] == " "):
            return rest[:i].strip(), rest[i + 1 :].strip()
    return rest.strip(), ""


def _lookup(values: Any, path: list[str]) -> Any:
    for part in path:
        values = values[part]
    return values


def _render_default(value: Any) -> str:
    text = json.dumps(value, separators=(", ", ": "))
    if len(text) > MAX_DEFAULT:
        text = text[: MAX_DEFAULT - 1] + "…"
    return "`" + text.replace("|", "\\|") + "`"


def rows(values_file: Path) -> list[tuple[str, str, str]]:
    """(key path, default, description) of every leaf setting, in file order."""
    text = values_file.read_text()
    values = yaml.safe_load(text)
    found: list[tuple[str, str, str]] = []
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    comment: list[str] = []
    skip_deeper_than: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than is not None:
            if indent > skip_deeper_than or stripped.startswith("- "):
                continue
            skip_deeper_than = None
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            # Section rulers ("# --- components ---") describe no single setting.
            comment = [] if body.startswith("---") else [*comment, body]
            continue
        match = KEY.match(line)
        if not match:
            comment = []
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = match["key"]
        path = [k for _, k in stack] + [key]
        value_text, inline = _inline_comment(match["rest"])
        value = _lookup(values, path)
        description = " ".join(" ".join([*comment, inline]).split())
        comment = []
        if isinstance(value, dict) and value and not value_text:
            stack.append((indent, key))
            if description:  # a described group: its row first, then its settings
                found.append((".".join(path), _render_default(value), description))
            continue
        if isinstance(value, list) and value and not value_text:
            skip_deeper_than = indent
        found.append((".".join(path), _render_default(value), description))
    return found


def table(values_file: Path) -> str:
    lines = ["| key | default | description |", "|---|---|---|"]
    for key, default, description in rows(values_file):
        escaped = description.replace("|", "\\|").replace("<", "&lt;")
        lines.append(f"| `{key}` | {default} | {escaped} |")
    return "\n".join(lines)


def updated_readme(readme: str, values_file: Path) -> str:
    start, end = readme.index(START) + len(START), readme.index(END)
    return readme[:start] + "\n" + table(values_file) + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    new = updated_readme(readme, CHART / "values.yaml")
    if args.check:
        if new != readme:
            print(
                f"{readme_path} is stale: run python scripts/chart_values_table.py",
                file=sys.stderr,
            )
            return 1
        return 0
    readme_path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
