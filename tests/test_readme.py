"""The README is part of the product: its generated parts must match the code."""

from __future__ import annotations

import subprocess
import sys

from tests.stack import ROOT


def test_readme_configuration_table_matches_the_settings_classes() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/config_table.py"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_every_makefile_target_the_readme_names_exists() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    for path in (ROOT / "mk").glob("*.mk"):
        targets |= set(re.findall(r"^([a-z][a-z-]*):", path.read_text(), re.M))
    named = set(re.findall(r"`make ([a-z][a-z-]*)", readme))
    assert named <= targets, f"README names targets that do not exist: {named - targets}"
