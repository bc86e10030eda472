"""`event-consumer`: run the consumer until SIGTERM or SIGINT, then shut down gracefully."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence

from event_consumer.main import run
from event_consumer.settings import Settings
from order_common.logging import configure_logging
from order_common.metrics import start_metrics_server
from order_common.telemetry import setup_telemetry


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await run(settings, stop)


def main(argv: Sequence[str] | None = None) -> None:
    argparse.ArgumentParser(
        prog="event-consumer",
        description="Consume new_order events and send process_order tasks. "
        "Configured by CONSUMER_* environment variables.",
    ).parse_args(argv)
    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    setup_telemetry(settings.service_name)
    start_metrics_server(settings.metrics_port, settings.metrics_host)
    asyncio.run(_serve(settings))


if __name__ == "__main__":
    main()
