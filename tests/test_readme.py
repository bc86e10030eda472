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
