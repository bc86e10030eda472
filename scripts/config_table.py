"""Print (or check) the README configuration table, generated from each service's Settings class,
so the documentation cannot drift from the code."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from order_common.settings import ServiceSettings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START, END = "<!-- config:start -->", "<!-- config:end -->"

SERVICES = [
    ("auth", "auth_service.settings"),
    ("orders", "orders_service.settings"),
    ("event-consumer", "event_consumer.settings"),
    ("worker", "order_worker.settings"),
]

# The fields of order_common.settings' parts, described once here.
COMMON = {
    "service_name": "name in logs and metrics",
    "environment": "`development`, `test` or `production` (production refuses placeholder secrets)",
    "log_level": "log level of the JSON logs",
    "database_url": "URL of this service's own database (`postgresql://` and `postgres://` "
    "get the asyncpg driver)",
    "migrate_create_database": "`migrate` creates the database first (connects to `postgres`); "
    "`false` for a role that may only reach its own database",
    "db_pool_size": "connections kept in the pool (one pool per process)",
    "db_max_overflow": "extra connections the pool may open under load",
    "redis_url": "Redis URL (cache, rate limits)",
    "redis_key_prefix": "prefix of every Redis key this service writes",
    "redis_timeout_seconds": "Redis socket timeout; a dead Redis degrades, never stalls, requests",
    "max_body_bytes": "largest request body accepted (413 beyond it), as the gateway enforces",
    "cors_allow_origins": "comma-separated origins allowed by CORS (never `*` with credentials)",
    "cors_allow_credentials": "whether CORS allows credentials",
    "rate_limit_enabled": "turn rate limiting off (tests, benchmarks)",
    "jwt_issuer": "`iss` of the tokens",
    "jwt_audience": "`aud` of the tokens",
    # order_common.bus.BusSettings, in every service on the event bus
    "amqp_url": "RabbitMQ URL of the event bus",
    "bus_exchange": "the topic exchange of the order events (routing key = event type)",
    "bus_queue_prefix": "prefix of this service's queues: `{prefix}.{service}.{event_type}`",
    "bus_max_attempts": "handler runs of a message before it goes to the dead-letter queue",
    "bus_retry_base_delay_seconds": "back-off after a handler's first failure; doubles each time",
    "bus_retry_max_delay_seconds": "the longest back-off between two attempts",
    "bus_delivery_limit": "deliveries without an ack (crashes) before the broker dead-letters "
    "a message (fixed when the queue is first declared)",
    "bus_outage_retry_max_delay_seconds": "while a dependency is unreachable, the longest pause "
    "between two runs of a handler (no attempt is spent)",
}


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    if hasattr(value, "get_secret_value"):  # the development default; refused in production
        return f"`{value.get_secret_value()}` (secret)"
    return "" if value is None else f"`{value}`"


def rows() -> list[str]:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for _, module_name in SERVICES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        settings: type[BaseSettings] = module.Settings
        prefix = str(settings.model_config.get("env_prefix", ""))
        # What every process has first (ServiceSettings), then the parts and the service's own.
        first = [name for name in ServiceSettings.model_fields if name in settings.model_fields]
        names = first + [name for name in settings.model_fields if name not in first]
        for name in names:
            field = settings.model_fields[name]
            meaning = field.description or COMMON.get(name, "")
            if not meaning:
                raise SystemExit(f"{module_name}.Settings.{name} has no description")
            lines.append(f"| `{(prefix + name).upper()}` | {_default(field)} | {meaning} |")
    return lines


def render() -> str:
    return "\n".join([START, *rows(), END])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the table in README.md")
    args = parser.parse_args()
    text = README.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit("README.md has no configuration table markers")
    updated = pattern.sub(lambda _: render(), text)
    if args.write:
        README.write_text(updated)
    elif updated != text:
        sys.exit("README.md configuration table is stale: run `make docs-config`")


if __name__ == "__main__":
    main()
