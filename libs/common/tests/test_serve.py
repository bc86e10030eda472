from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from order_common import serve
from order_common.logging import configure_logging


def test_zero_workers_means_one_per_core() -> None:
    assert serve.worker_count(0) == len(os.sched_getaffinity(0))
    assert serve.worker_count(3) == 3


def test_the_metrics_directory_is_emptied_of_an_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"old")
    monkeypatch.setenv(serve.MULTIPROC_ENV, str(tmp_path))
    assert serve.prepare_metrics_dir() == str(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_private_metrics_directory_is_made_when_none_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Empty counts as unset. (setenv, not delenv: prepare_metrics_dir sets the variable, and
    # only a setenv is undone to "unset" afterwards; a leaked directory would be shared by
    # every service a later test starts, each emptying the others' files.)
    monkeypatch.setenv(serve.MULTIPROC_ENV, "")
    first = serve.prepare_metrics_dir()
    monkeypatch.setenv(serve.MULTIPROC_ENV, "")
    second = serve.prepare_metrics_dir()
    assert first != second
    assert Path(first).is_dir()
    assert Path(second).is_dir()


@pytest.mark.parametrize("access_log", [False, True])
def test_no_access_log_line_unless_asked_for(access_log: bool) -> None:
    configure_logging("test", "INFO", access_log=access_log)
    try:
        assert logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO) is access_log
    finally:
        configure_logging("test", "INFO")
