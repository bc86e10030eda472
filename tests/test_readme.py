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


def test_the_configuration_table_lists_no_setting_that_nothing_reads() -> None:
    """The consumer and the worker have no database, no CORS, no JWT and no HTTP rate limits:
    their settings classes are made of the parts they use, so the table never offers them."""
    readme = (ROOT / "README.md").read_text()
    for prefix in ("CONSUMER", "WORKER"):
        for unread in (
            "DATABASE_URL",
            "DB_POOL_SIZE",
            "CORS_ALLOW_ORIGINS",
            "JWT_ISSUER",
            "RATE_LIMIT_ENABLED",
            "MAX_BODY_BYTES",
        ):
            assert f"`{prefix}_{unread}`" not in readme
    for used in ("CONSUMER_CELERY_QUEUE", "WORKER_CELERY_QUEUE", "ORDERS_FORWARDED_ALLOW_IPS"):
        assert f"`{used}`" in readme


def test_the_layout_table_lists_every_top_level_entry_and_every_service() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Repository layout", 1)[1].split("\n## ", 1)[0]
    listed = {
        name.rstrip("/")
        for row in re.findall(r"^\| (.+?) \|", section, re.M)
        for name in re.findall(r"`([^`]+)`", row)
    }
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    top = {path.split("/")[0] for path in tracked}
    # A directory counts as listed by its own row or by rows for what it holds.
    missing = {
        name
        for name in top
        if name not in listed and not any(entry.startswith(f"{name}/") for entry in listed)
    }
    assert not missing, f"not in the README layout: {sorted(missing)}"
    services = {path.split("/")[1] for path in tracked if path.startswith("services/")}
    assert {f"services/{name}" for name in services} <= listed
