"""``orders-service serve`` runs the API; ``orders-service events`` the service's process on the
event bus (the outbox relay, and applying ``order_processed``); ``orders-service migrate``
creates and migrates the database; ``orders-service dlq`` shows and re-drives the outbox's
dead letters. All read the same ORDERS_* environment."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import uuid

from order_common.logging import configure_logging
from orders_service.settings import Settings

MIGRATIONS = "orders_service:migrations"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="orders-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8002)

    commands.add_parser(
        "events",
        help="publish the outbox to RabbitMQ and apply order_processed (several may run)",
    )

    migrate = commands.add_parser(
        "migrate",
        help="migrate the database (creating it first unless *_MIGRATE_CREATE_DATABASE=false)",
    )
    migrate.add_argument("--revision", default="head")

    dlq = commands.add_parser(
        "dlq", help="the outbox's dead letters: events the relay set aside (show, redrive)"
    )
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_show = dlq_commands.add_parser("show", help="count and the first --limit, as JSON lines")
    dlq_show.add_argument("--limit", type=int, default=10)
    dlq_redrive = dlq_commands.add_parser(
        "redrive", help="put dead letters back in the outbox (attempts reset)"
    )
    dlq_redrive.add_argument("--limit", type=int, default=1000)
    dlq_redrive.add_argument(
        "--id", dest="ids", action="append", type=uuid.UUID, help="only this event (repeatable)"
    )

    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    # Each command imports only what it runs: the processes start faster.
    if args.command == "migrate":
        from order_common.migrations import upgrade

        upgrade(
            MIGRATIONS,
            settings.database_url.get_secret_value(),
            args.revision,
            create_database=settings.migrate_create_database,
        )
        return
    if args.command == "dlq":
        print(asyncio.run(_run_dlq(settings, args)))
        return
    if args.command == "events":
        asyncio.run(_run_events(settings))
        return

    from order_common.serve import serve as run_api

    run_api(
        "orders_service.main:serve_app",
        settings,
        host=args.host,
        port=args.port,
    )


async def _run_dlq(settings: Settings, args: argparse.Namespace) -> str:
    from order_common.db import build_engine, build_session_factory
    from orders_service import outbox_dlq

    engine = build_engine(settings.database_url.get_secret_value(), pool_size=1, max_overflow=0)
    try:
        session_factory = build_session_factory(engine)
        if args.dlq_command == "show":
            return outbox_dlq.json_lines(*await outbox_dlq.show(session_factory, args.limit))
        moved = await outbox_dlq.redrive(session_factory, ids=args.ids, limit=args.limit)
        return json.dumps({"queue": "outbox", "redriven": moved})
    finally:
        await engine.dispose()


async def _run_events(settings: Settings) -> None:
    from order_common.metrics import start_metrics_server
    from order_common.telemetry import setup_telemetry
    from orders_service import events

    setup_telemetry(f"{settings.service_name}-events")
    start_metrics_server(settings.events_metrics_port, settings.events_metrics_host)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await events.run(settings, stop)


if __name__ == "__main__":
    main()
