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
    monkeypatch.delenv(serve.MULTIPROC_ENV, raising=False)
    first = serve.prepare_metrics_dir()
    monkeypatch.delenv(serve.MULTIPROC_ENV)
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
