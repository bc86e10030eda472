"""`order-worker`: the Celery worker, configured by WORKER_* environment variables.

This module imports nothing at the top that would import prometheus_client: its metrics mode
(multiprocess, for the prefork children) is fixed when it is first imported, so
``PROMETHEUS_MULTIPROC_DIR`` must be set first."""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _prepare_metrics_dir() -> str:
    """The directory where every worker process writes its metrics: the one
    PROMETHEUS_MULTIPROC_DIR names, else a new temporary one. Emptied of an earlier run's
    files."""
    path = os.environ.get(MULTIPROC_ENV, "")
    if not path:
        path = tempfile.mkdtemp(prefix="order-worker-metrics-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)  # children leave by os._exit
    os.environ[MULTIPROC_ENV] = path
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
    return path


def _keep_our_logging(**_: Any) -> None:
    """A `setup_logging` receiver stops Celery from replacing the JSON logging set up below
    (prefork children inherit it)."""


def _child_started(**_: Any) -> None:
    """Tracing starts in each prefork child: an exporter's thread does not survive a fork."""
    from order_common.telemetry import instrument_celery, setup_telemetry

    setup_telemetry(_service_name)
    instrument_celery()


def _child_stopping(**_: Any) -> None:
    from prometheus_client import multiprocess

    from order_common.telemetry import shutdown_telemetry

    shutdown_telemetry()  # children leave through os._exit: no atexit flush
    multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


_service_name = "worker"


def main(argv: Sequence[str] | None = None) -> None:
    global _service_name
    parser = argparse.ArgumentParser(
        prog="order-worker",
        description="Process orders from the Celery queue. Configured by WORKER_* variables.",
    )
    parser.add_argument("--concurrency", type=int, default=None, help="overrides the setting")
    groups = parser.add_subparsers(dest="group")
    dlq = groups.add_parser("dlq", help="the tasks that failed for good (order_worker.deadletters)")
    actions = dlq.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="count and print the first ones (kept)")
    show.add_argument("--limit", type=int, default=10)
    move = actions.add_parser("redrive", help="send them again")
    move.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    if args.group == "dlq":
        from order_worker import deadletters

        deadletters.main(args.action, args.limit)
        return

    _prepare_metrics_dir()
    from celery import signals

    from order_common.logging import configure_logging
    from order_common.metrics import start_metrics_server
    from order_worker import metrics
    from order_worker.app import create_celery
    from order_worker.settings import Settings

    settings = Settings()
    if args.concurrency is not None:
        settings = settings.model_copy(update={"concurrency": args.concurrency})
    _service_name = settings.service_name
    configure_logging(settings.service_name, settings.log_level)
    signals.setup_logging.connect(_keep_our_logging, weak=False)
    signals.worker_process_init.connect(_child_started, weak=False)
    signals.worker_process_shutdown.connect(_child_stopping, weak=False)
    metrics.install()
    start_metrics_server(
        settings.metrics_port, settings.metrics_host, registry=metrics.registry(settings)
    )

    app = create_celery(settings)
    app.worker_main(
        [
            "--quiet",
            "worker",
            f"--concurrency={settings.concurrency}",
            f"--queues={settings.celery_queue}",
            f"--loglevel={settings.log_level}",
            f"--hostname=order-worker.{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )


if __name__ == "__main__":
    main()
