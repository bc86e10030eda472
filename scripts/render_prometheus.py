"""Render observability/prometheus/prometheus.yml for a Prometheus next to a `make run` stack
(or the test stack): each job's target gets the port its process listens on here, taken from
the same environment variables the stack reads, and the rule files become absolute paths.

    python scripts/render_prometheus.py --out .run/prometheus/prometheus.yml [--interval 5s]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "observability" / "prometheus" / "prometheus.yml"

# job -> (environment variable with its port, the port when it is unset)
JOB_PORTS: dict[str, tuple[str, int]] = {
    "auth": ("AUTH_PORT", 8001),
    "orders": ("ORDERS_PORT", 8002),
    "orders-events": ("ORDERS_EVENTS_METRICS_PORT", 9101),
    "event-consumer": ("CONSUMER_METRICS_PORT", 9102),
    "worker": ("WORKER_METRICS_PORT", 9103),
    "rabbitmq": ("RABBITMQ_PROMETHEUS_PORT", 15692),
    "rabbitmq-queues": ("RABBITMQ_PROMETHEUS_PORT", 15692),
}


def render(source: Path, env: Mapping[str, str], *, interval: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(source.read_text())
    if interval:
        config.setdefault("global", {}).update(
            scrape_interval=interval, evaluation_interval=interval
        )
    config["rule_files"] = [
        str((source.parent / pattern).resolve()) for pattern in config.get("rule_files", [])
    ]
    for job in config.get("scrape_configs", []):
        port_of = JOB_PORTS.get(job["job_name"])
        if port_of is None:
            continue
        variable, default = port_of
        port = env.get(variable) or str(default)
        for static in job.get("static_configs", []):
            static["targets"] = [
                f"{target.rsplit(':', 1)[0]}:{port}" for target in static.get("targets", [])
            ]
    return config


def dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a .env file (comments and blank lines skipped)."""
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("'\"")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--interval", help="scrape and rule evaluation interval, e.g. 1s")
    args = parser.parse_args(argv)
    # The ports `make run` uses: the environment, else .env (the supervisor reads it), else
    # the defaults.
    config = render(args.source, {**dotenv(ROOT / ".env"), **os.environ}, interval=args.interval)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        "# Rendered from observability/prometheus/prometheus.yml by scripts/render_prometheus.py\n"
        + yaml.safe_dump(config, sort_keys=False)
    )
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
