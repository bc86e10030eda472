"""`make test-images`: run the images built by `make images` (podman, host network) against the
machine's PostgreSQL, Redis and RabbitMQ, and pass the README walkthrough through the gateway
container. Everything this run makes is its own (databases, a RabbitMQ vhost, Redis key
prefixes, containers) and is removed at the end. Standard library only."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("IMAGE_TAG", "dev")
IMAGE = "localhost/order-platform/{}:" + TAG
RUN = uuid.uuid4().hex[:8]
NAME = f"op-img-{RUN}"
PG = "postgresql+asyncpg://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379"
# Each container starts as in the chart: read-only root, /tmp only, no capabilities.
LOCKED = [
    "--read-only",
    "--tmpfs",
    "/tmp",  # noqa: S108 (a tmpfs inside the container)
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--network",
    "host",
]


def log(message: str) -> None:
    print(f"[test-images] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sh(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    if not quiet and result.stderr.strip():
        noise = [line for line in result.stderr.splitlines() if "level=error" not in line]
        if noise and result.returncode != 0:
            print("\n".join(noise), file=sys.stderr)
    return result


def http(url: str, timeout: float = 3) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Containers:
    def __init__(self) -> None:
        self.names: list[str] = []

    def run(
        self,
        role: str,
        image: str,
        *command: str,
        env: dict[str, str],
        volumes: tuple[str, ...] = (),
        detach: bool = True,
        user: str | None = None,
        locked: bool = True,
    ) -> str:
        name = f"{NAME}-{role}"
        args = ["podman", "run", "--name", name, *(LOCKED if locked else ["--network", "host"])]
        # The image HEALTHCHECK needs systemd timers podman cannot set up here; this run polls
        # the same endpoints itself.
        args += ["--no-healthcheck"]
        if user:
            args += ["--user", user]
        for key, value in env.items():
            args += ["-e", f"{key}={value}"]
        for volume in volumes:
            args += ["-v", volume]
        if detach:
            args.append("-d")
        else:
            args.append("--rm")
        self.names.append(name)
        sh(*args, image, *command)
        return name

    def logs(self) -> str:
        out = []
        for name in self.names:
            result = sh("podman", "logs", "--tail", "40", name, check=False, quiet=True)
            if result.returncode == 0:
                out.append(f"--- {name}\n{result.stdout}{result.stderr}")
        return "\n".join(out)

    def running(self, name: str) -> bool:
        result = sh("podman", "inspect", "-f", "{{.State.Running}}", name, check=False, quiet=True)
        return result.stdout.strip() == "true"

    def remove(self) -> None:
        for name in reversed(self.names):
            sh("podman", "rm", "-f", "-t", "5", name, check=False, quiet=True)


@contextmanager
def isolated_services() -> Iterator[dict[str, str]]:
    """This run's databases (created by the migrations), vhost and key prefixes."""
    vhost = f"img_{RUN}"
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    sh(rabbitmqctl, "add_vhost", vhost, quiet=True)
    sh(rabbitmqctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*", quiet=True)
    names = {
        "auth_db": f"auth_img_{RUN}",
        "orders_db": f"orders_img_{RUN}",
        "vhost": vhost,
        "prefix": f"test:img{RUN}",
    }
    try:
        yield names
    finally:
        sh(rabbitmqctl, "delete_vhost", vhost, check=False, quiet=True)
        for db in (names["auth_db"], names["orders_db"]):
            sh(
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-q",
                "-c",
                f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)',
                check=False,
                quiet=True,
            )
        for database in ("0", "1"):
            keys = sh(
                "redis-cli",
                "-n",
                database,
                "--scan",
                "--pattern",
                f"{names['prefix']}*",
                check=False,
                quiet=True,
            ).stdout.split()
            for start in range(0, len(keys), 500):
                sh(
                    "redis-cli",
                    "-n",
                    database,
                    "del",
                    *keys[start : start + 500],
                    check=False,
                    quiet=True,
                )


def walkthrough_script() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(
        r"<!-- walkthrough:start -->\s*```bash\n(.*?)```\s*<!-- walkthrough:end -->", text, re.S
    )
    if not match:
        raise RuntimeError("README.md has no walkthrough block")
    return match.group(1)


def main() -> int:
    for tool in ("podman", "psql", "redis-cli"):
        if not shutil.which(tool):
            log(f"{tool} is missing")
            return 1
    images = {
        name: IMAGE.format(name)
        for name in ("auth", "orders", "event-consumer", "worker", "gateway")
    }
    missing = [
        i for i in images.values() if sh("podman", "image", "exists", i, check=False).returncode
    ]
    if missing:
        log(f"images missing (run `make images`): {missing}")
        return 1

    ports = {"auth": free_port(), "orders": free_port(), "gateway": free_port()}
    containers = Containers()
    keys = Path(tempfile.mkdtemp(prefix="op-img-keys-"))
    keys.chmod(0o755)
    started = time.monotonic()
    with isolated_services() as svc:
        amqp = f"amqp://guest:guest@127.0.0.1:5672/{svc['vhost']}"
        auth_env = {
            "AUTH_ENVIRONMENT": "test",
            "AUTH_DATABASE_URL": f"{PG}/{svc['auth_db']}",
            "AUTH_REDIS_URL": f"{REDIS}/0",
            "AUTH_REDIS_KEY_PREFIX": f"{svc['prefix']}:auth",
            "AUTH_JWT_PRIVATE_KEY_PATH": "/keys/jwt-private.pem",
            "AUTH_FORWARDED_ALLOW_IPS": "127.0.0.1",
        }
        orders_env = {
            "ORDERS_ENVIRONMENT": "test",
            "ORDERS_DATABASE_URL": f"{PG}/{svc['orders_db']}",
            "ORDERS_REDIS_URL": f"{REDIS}/0",
            "ORDERS_REDIS_KEY_PREFIX": f"{svc['prefix']}:orders",
            "ORDERS_JWKS_URL": f"http://127.0.0.1:{ports['auth']}/.well-known/jwks.json",
            "ORDERS_AMQP_URL": amqp,
        }
        celery = {
            "CELERY_BROKER_URL": f"{REDIS}/1",
            "CELERY_KEY_PREFIX": f"{svc['prefix']}:celery:",
            "CELERY_QUEUE": f"orders_img_{RUN}",
        }
        consumer_env = {
            "CONSUMER_ENVIRONMENT": "test",
            "CONSUMER_AMQP_URL": amqp,
            "CONSUMER_REDIS_URL": f"{REDIS}/0",
            "CONSUMER_REDIS_KEY_PREFIX": f"{svc['prefix']}:consumer",
            **{f"CONSUMER_{k}": v for k, v in celery.items()},
        }
        worker_env = {
            "WORKER_ENVIRONMENT": "test",
            "WORKER_AMQP_URL": amqp,
            "WORKER_REDIS_URL": f"{REDIS}/0",
            "WORKER_REDIS_KEY_PREFIX": f"{svc['prefix']}:worker",
            "WORKER_PROCESSING_DELAY_SECONDS": "0.5",
            "WORKER_CONCURRENCY": "1",
            **{f"WORKER_{k}": v for k, v in celery.items()},
        }
        try:
            log("signing key (auth image, as in compose's keygen)")
            containers.run(
                "keygen",
                images["auth"],
                "sh",
                "-c",
                "auth-service generate-dev-key /keys/jwt-private.pem && "
                "chown 10001:10001 /keys/jwt-private.pem",
                env={},
                volumes=(f"{keys}:/keys",),
                detach=False,
                user="0:0",
                locked=False,
            )
            log("migrations (each service image, as the chart's hook Job)")
            containers.run(
                "migrate-auth",
                images["auth"],
                "auth-service",
                "migrate",
                env=auth_env,
                detach=False,
            )
            containers.run(
                "migrate-orders",
                images["orders"],
                "orders-service",
                "migrate",
                env=orders_env,
                detach=False,
            )

            log(
                f"services: auth :{ports['auth']}, orders :{ports['orders']}, "
                "relay, consumer, worker"
            )
            auth = containers.run(
                "auth",
                images["auth"],
                "auth-service",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["auth"]),
                env=auth_env,
                volumes=(f"{keys}:/keys:ro",),
            )
            orders = containers.run(
                "orders",
                images["orders"],
                "orders-service",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["orders"]),
                env={**orders_env, "ORDERS_FORWARDED_ALLOW_IPS": "127.0.0.1"},
            )
            workers = [
                containers.run(
                    "events", images["orders"], "orders-service", "events", env=orders_env
                ),
                containers.run("consumer", images["event-consumer"], env=consumer_env),
                containers.run("worker", images["worker"], env=worker_env),
            ]
            gateway = containers.run(
                "gateway",
                images["gateway"],
                env={
                    "GATEWAY_PORT": str(ports["gateway"]),
                    "AUTH_UPSTREAM": f"127.0.0.1:{ports['auth']}",
                    "ORDERS_UPSTREAM": f"127.0.0.1:{ports['orders']}",
                },
            )

            base = f"http://127.0.0.1:{ports['gateway']}"
            deadline = time.monotonic() + 120
            state = "nothing answered"
            while time.monotonic() < deadline:
                for name in (auth, orders, gateway, *workers):
                    if not containers.running(name):
                        raise RuntimeError(f"container {name} exited")
                try:
                    ready = [
                        http(f"http://127.0.0.1:{ports[s]}/readyz")[0] for s in ("auth", "orders")
                    ]
                    jwks = http(f"{base}/.well-known/jwks.json")[0]
                    unauthorized = http(f"{base}/orders/user/1/")[0]
                    state = f"readyz {ready}, jwks {jwks}, orders {unauthorized}"
                    if ready == [200, 200] and jwks == 200 and unauthorized == 401:
                        break
                except OSError as error:
                    state = repr(error)
                time.sleep(1)
            else:
                raise RuntimeError(f"the stack did not become ready: {state}")
            log(f"ready after {time.monotonic() - started:.0f} s ({state})")

            # The image HEALTHCHECKs, run by hand (what Docker would run).
            for name, port in ((auth, ports["auth"]), (orders, ports["orders"])):
                code = (
                    "import urllib.request; "
                    f"urllib.request.urlopen('http://127.0.0.1:{port}/healthz', timeout=2)"
                )
                sh("podman", "exec", name, "python", "-c", code)
            sh(
                "podman",
                "exec",
                gateway,
                "curl",
                "-fsS",
                f"http://127.0.0.1:{ports['gateway']}/healthz",
            )
            log("HEALTHCHECK commands pass inside auth, orders and gateway")

            script = walkthrough_script().replace("http://localhost:8000", base)
            with tempfile.TemporaryDirectory() as work:
                result = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", script],
                    cwd=work,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
            if result.returncode != 0:
                raise RuntimeError(f"walkthrough failed:\n{result.stdout}\n{result.stderr}")
            documents = [
                json.loads(line)
                for line in result.stdout.splitlines()
                if line.startswith(("{", "["))
            ]
            registered, created, first, second, patched, listed = documents
            assert created["status"] == "PENDING", created
            assert created["total_price"] == "451.00", created
            assert first == second == created, (first, second)
            assert patched["status"] == "PAID", patched
            assert [o["id"] for o in listed] == [created["id"]], listed
            log(
                "README walkthrough passed through the gateway container "
                f"(user {registered['id']}, "
                f"order {created['id']})"
            )

            status, body = http(f"{base}/docs")
            assert status == 200, (status, body[:200])
            assert b"swagger" in body.lower(), body[:200]
            log("gateway serves /docs from the image")

            # The event pipeline: relay -> RabbitMQ -> consumer -> Celery -> worker -> orders.
            processed = wait_processed(base, script, created["id"])
            log("order processed by the worker: " + (processed or "not observed"))
            if processed is None:
                raise RuntimeError("the order was not processed within 60 s")
        except Exception:
            print(containers.logs(), file=sys.stderr)
            raise
        finally:
            containers.remove()
            shutil.rmtree(keys, ignore_errors=True)
    log(f"passed in {time.monotonic() - started:.0f} s")
    return 0


def wait_processed(base: str, script: str, order_id: str) -> str | None:
    """Log in as the walkthrough's user and poll the order until processed_at is set."""
    login = re.search(r"-d '(username=[^']+)'", script)
    assert login, "walkthrough login not found"
    request = urllib.request.Request(  # noqa: S310 (loopback http)
        f"{base}/token/", data=login.group(1).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
        token = json.load(response)["access_token"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        request = urllib.request.Request(  # noqa: S310 (loopback http)
            f"{base}/orders/{order_id}/", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 (loopback)
            order = json.load(response)
        if order.get("processed_at"):
            return str(order["processed_at"])
        time.sleep(1)
    return None


if __name__ == "__main__":
    sys.exit(main())
