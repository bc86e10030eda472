"""`order-worker`: the Celery worker, configured by WORKER_* environment variables."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

from celery import signals

from order_common.logging import configure_logging
from order_worker.app import create_celery
from order_worker.settings import Settings


def _keep_our_logging(**_: Any) -> None:
    """A `setup_logging` receiver stops Celery from replacing the JSON logging set up below
    (prefork children inherit it)."""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="order-worker",
        description="Process orders from the Celery queue. Configured by WORKER_* variables.",
    )
    parser.add_argument("--concurrency", type=int, default=None, help="overrides the setting")
    args = parser.parse_args(argv)

    settings = Settings()
    if args.concurrency is not None:
        settings = settings.model_copy(update={"concurrency": args.concurrency})
    configure_logging(settings.service_name, settings.log_level)
    signals.setup_logging.connect(_keep_our_logging, weak=False)

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
