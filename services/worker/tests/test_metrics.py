"""The worker's metrics add up its prefork children (prometheus_client's multiprocess mode);
the whole path is exercised by tests/observability against the running stack."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_the_cli_imports_no_metrics_before_choosing_the_multiprocess_mode() -> None:
    # prometheus_client picks its mode when first imported: the CLI must set
    # PROMETHEUS_MULTIPROC_DIR before anything imports it.
    probe = "import sys, order_worker.cli; print('prometheus_client' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_metrics_directory_is_emptied_and_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from order_worker import cli

    stale = tmp_path / "counter_123.db"
    stale.write_bytes(b"old")
    keep = tmp_path / "notes.txt"
    keep.write_text("not ours")
    monkeypatch.setenv(cli.MULTIPROC_ENV, str(tmp_path))
    assert cli._prepare_metrics_dir() == str(tmp_path)
    assert not stale.exists()
    assert keep.exists()
