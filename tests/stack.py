"""Start the platform the way `make run` does (scripts/supervise.py + the repo's Procfile + a
real nginx), on free ports, with this run's own databases, key prefixes, signing key, RabbitMQ
exchange and queues, and Celery queue; all of them are removed when the run ends.

By default the stack uses the machine's shared PostgreSQL, Redis and RabbitMQ; the chaos tests
pass their own private instances (``DataServices``) so they can stop them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import redis
from order_testing import free_port

from order_common.bus import Topology, delete_exchanges, delete_subscription
from order_common.dbadmin import drop_database
from order_common.events import EventType

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
SUPERVISE = ROOT / "scripts" / "supervise.py"


@dataclass(frozen=True)
class DataServices:
    """Where the stack finds its data services: a PostgreSQL server (no database part), a
    Redis server (no db number: the cache uses db 0, Celery's broker db 1) and a RabbitMQ."""

    postgres: str = "postgresql+asyncpg://postgres@127.0.0.1:5432"
    redis: str = "redis://127.0.0.1:6379"
    amqp: str = "amqp://guest:guest@127.0.0.1:5672/"

    @property
    def redis_url(self) -> str:
        return f"{self.redis}/0"

    @property
    def celery_broker_url(self) -> str:
        return f"{self.redis}/1"


SHARED = DataServices()
PG = SHARED.postgres
REDIS_URL = SHARED.redis_url
CELERY_BROKER_URL = SHARED.celery_broker_url
AMQP_URL = SHARED.amqp
# The bus subscribers of the stack (`{queue_prefix}.{subscriber}.{event_type}` queues) and the
# event each must be consuming before an order can make the whole trip.
SUBSCRIPTIONS = {"event-consumer": EventType.NEW_ORDER, "orders": EventType.ORDER_PROCESSED}


@dataclass
class Stack:
    base_url: str
    env: dict[str, str]
    log_path: Path
    run_id: str
    extra: dict[str, str] = field(default_factory=dict)
    services: DataServices = SHARED
    status_path: Path | None = None
    # The supervisor's own pid: every process of the stack runs below it.
    supervisor_pid: int = 0

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def processes(self) -> dict[str, Any]:
        """The supervisor's view: ``{name: {"pid", "restarts", "state"}}``."""
        assert self.status_path is not None
        try:
            return dict(json.loads(self.status_path.read_text())["processes"])
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def pid(self, name: str) -> int | None:
        entry = self.processes().get(name) or {}
        pid = entry.get("pid")
        return int(pid) if pid else None


def stack_env(run_id: str, workdir: Path, services: DataServices = SHARED) -> dict[str, str]:
    ports = {
        name: free_port()
        for name in (
            "AUTH_PORT",
            "ORDERS_PORT",
            "GATEWAY_PORT",
            # The metrics ports of the processes without an HTTP API (observability/prometheus/).
            "ORDERS_EVENTS_METRICS_PORT",
            "CONSUMER_METRICS_PORT",
            "WORKER_METRICS_PORT",
        )
    }
    key_path = workdir / "jwt-private.pem"
    subprocess.run([BIN / "auth-service", "generate-dev-key", str(key_path)], check=True)
    env = {
        **{name: str(port) for name, port in ports.items()},
        "GATEWAY_RUN_DIR": str(workdir / "gateway"),
        "AUTH_DATABASE_URL": f"{services.postgres}/auth_{run_id}",
        "ORDERS_DATABASE_URL": f"{services.postgres}/orders_{run_id}",
        "AUTH_REDIS_URL": services.redis_url,
        "ORDERS_REDIS_URL": services.redis_url,
        "AUTH_REDIS_KEY_PREFIX": f"test:{run_id}:auth",
        "ORDERS_REDIS_KEY_PREFIX": f"test:{run_id}:orders",
        "AUTH_JWT_PRIVATE_KEY_PATH": str(key_path),
        "ORDERS_JWKS_URL": f"http://127.0.0.1:{ports['AUTH_PORT']}/.well-known/jwks.json",
        "AUTH_ENVIRONMENT": "test",
        "ORDERS_ENVIRONMENT": "test",
        "CONSUMER_ENVIRONMENT": "test",
        "WORKER_ENVIRONMENT": "test",
        "CONSUMER_REDIS_URL": services.redis_url,
        "WORKER_REDIS_URL": services.redis_url,
        "CONSUMER_REDIS_KEY_PREFIX": f"test:{run_id}:consumer",
        "WORKER_REDIS_KEY_PREFIX": f"test:{run_id}:worker",
        "ORDERS_RELAY_POLL_INTERVAL_SECONDS": "1",
        "WORKER_PROCESSING_DELAY_SECONDS": "0.2",
    }
    # Every process on the bus gets this run's exchange and queue names.
    for prefix in ("ORDERS", "CONSUMER", "WORKER"):
        env[f"{prefix}_AMQP_URL"] = services.amqp
        env[f"{prefix}_BUS_EXCHANGE"] = f"test.{run_id}.events"
        env[f"{prefix}_BUS_QUEUE_PREFIX"] = f"test.{run_id}"
    # The consumer sends to the Celery queue the worker reads; both must agree on all three.
    for prefix in ("CONSUMER", "WORKER"):
        env[f"{prefix}_CELERY_BROKER_URL"] = services.celery_broker_url
        env[f"{prefix}_CELERY_QUEUE"] = f"test.{run_id}.orders"
        env[f"{prefix}_CELERY_KEY_PREFIX"] = f"test:{run_id}:celery:"
    return env


def bus_topology(env: dict[str, str]) -> Topology:
    return Topology(
        exchange=env["ORDERS_BUS_EXCHANGE"], queue_prefix=env["ORDERS_BUS_QUEUE_PREFIX"]
    )


async def _wait_for_subscriptions(topology: Topology, deadline: float, amqp_url: str) -> None:
    """Until every subscriber declared its queue: an event published earlier would wait in
    the unrouted queue instead of reaching it."""
    connection = await aio_pika.connect(amqp_url)
    try:
        for subscriber, event_type in SUBSCRIPTIONS.items():
            name = topology.queue_name(subscriber, event_type)
            while True:
                channel = await connection.channel()
                try:
                    await channel.declare_queue(name, passive=True)
                    break
                except aio_pika.exceptions.ChannelClosed:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{subscriber} never declared {name}") from None
                    await asyncio.sleep(0.2)
                finally:
                    if not channel.is_closed:
                        await channel.close()
    finally:
        await connection.close()


async def _delete_bus(topology: Topology, amqp_url: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for subscriber in SUBSCRIPTIONS:
            for event_type in EventType:
                await delete_subscription(channel, topology, subscriber, event_type)
        await delete_exchanges(channel, topology)
    finally:
        await connection.close()


def wait_until_ready(base_url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    last = "nothing answered"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the stack exited early:\n{log_path.read_text()[-4000:]}")
        try:
            jwks = httpx.get(f"{base_url}/.well-known/jwks.json", timeout=2)
            orders = httpx.get(f"{base_url}/orders/user/1/", timeout=2)
            # 401 from orders means the orders service itself answered through the gateway.
            if jwks.status_code == 200 and orders.status_code == 401:
                return
            last = f"jwks {jwks.status_code}, orders {orders.status_code}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise RuntimeError(f"the stack did not become ready ({last}):\n{log_path.read_text()[-4000:]}")


@contextmanager
def running_stack(
    workdir: Path,
    extra_env: dict[str, str] | None = None,
    *,
    services: DataServices = SHARED,
    supervisor_args: tuple[str, ...] = (),
) -> Iterator[Stack]:
    run_id = f"e2e_{uuid.uuid4().hex[:10]}"
    env = stack_env(run_id, workdir, services)
    env.update(extra_env or {})
    # Each service makes its own metrics directory; one named by the caller's environment
    # would be shared (and emptied) by all of them.
    inherited = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    full_env = {**inherited, **env}
    env_file = workdir / "stack.env"  # the supervisor reads .env by default; use this run's own
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    for service in ("auth-service", "orders-service"):
        subprocess.run([BIN / service, "migrate"], check=True, env=full_env, cwd=ROOT)
    log_path = workdir / "stack.log"
    status_path = workdir / "supervise.json"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                BIN / "python",
                SUPERVISE,
                *("-f", "Procfile", "-e", env_file, "--status-file", status_path),
                *supervisor_args,
            ],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{env['GATEWAY_PORT']}"
    topology = bus_topology(env)
    try:
        wait_until_ready(base_url, proc, log_path)
        try:
            asyncio.run(_wait_for_subscriptions(topology, time.monotonic() + 30, services.amqp))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{log_path.read_text()[-4000:]}") from None
        yield Stack(
            base_url=base_url,
            env=env,
            log_path=log_path,
            run_id=run_id,
            services=services,
            status_path=status_path,
            supervisor_pid=proc.pid,
        )
    finally:
        stop(proc)
        for name in ("AUTH_DATABASE_URL", "ORDERS_DATABASE_URL"):
            asyncio.run(drop_database(env[name]))
        asyncio.run(_delete_bus(topology, services.amqp))
        for url in (services.redis_url, services.celery_broker_url):
            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(match=f"test:{run_id}:*", count=1000))
            if keys:
                client.delete(*keys)
            client.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # the supervisor stops its processes, then itself
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
