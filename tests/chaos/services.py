"""Private PostgreSQL, Redis and RabbitMQ for the chaos tests, each on free ports in a temporary
directory, so a test can stop and start them; the machine's shared services are never touched.

- PostgreSQL: ``initdb`` + ``pg_ctl`` as the ``postgres`` user (the server refuses to run as
  root); stopped with ``pg_ctl stop -m fast`` (what a restart or failover does to clients).
- Redis: ``redis-server`` with an append-only file, stopped with SIGTERM (Redis saves and
  exits). Celery's broker lives in Redis, so a Redis that kept nothing across a restart would
  lose the queued tasks: the platform requires a persistent Redis and so does this one.
- RabbitMQ: a node of its own (own node name, ports, data directory) run as the ``rabbitmq``
  user with the machine's Erlang cookie; an outage is ``rabbitmqctl stop_app`` (listeners
  closed, every connection cut, durable queues kept) and ``start_app``.

Each sits behind a ``DelayProxy`` the stack connects through, so a test can also make it slow.
The tests read and count directly, not through the proxies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from order_testing import TcpProxy, free_port

from tests.stack import DataServices


def _wait_for_port(port: int, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited early (code {proc.returncode})")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:.0f} s")


def _owned_dir(prefix: str, user: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    shutil.chown(path, user=user, group=user)
    return path


class PrivatePostgres:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = _owned_dir("chaos-pg-", "postgres")
        self.data = self.dir / "data"
        self.running = False

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.dir,
        )

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def init(self) -> None:
        self._as_postgres(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        self.start()

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200"
        )
        self._as_postgres(
            "pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w",
            "start",
        )  # fmt: skip
        self.running = True

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                *("--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir)),
                *("--save", "", "--appendonly", "yes", "--appendfsync", "everysec"),
                *("--daemonize", "no", "--logfile", str(self.dir / "log")),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, 15, "redis-server", self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRabbitMQ:
    def __init__(self) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"chaos-{os.getpid()}-{self.port}@localhost"
        self.dir = _owned_dir("chaos-rabbitmq-", "rabbitmq")
        self.proc: subprocess.Popen[bytes] | None = None
        self.app_running = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": "/var/lib/rabbitmq",  # where the machine's Erlang cookie is
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
            # The machine's env file names the shared node: not ours.
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    def _ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            ["runuser", "-u", "rabbitmq", "--", "env", *_env_args(self._env()), "rabbitmqctl",
             "-n", self.node, *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout,
        )  # fmt: skip

    def start(self) -> None:
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        (self.dir / "enabled_plugins").write_text("[].\n")
        for path in self.dir.iterdir():
            shutil.chown(path, user="rabbitmq", group="rabbitmq")
        log = (self.dir / "server.out").open("wb")
        self.proc = subprocess.Popen(
            ["runuser", "-u", "rabbitmq", "--", "env", *_env_args(self._env()), "rabbitmq-server"],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            start_new_session=True,
        )
        _wait_for_port(self.port, 90, "rabbitmq-server", self.proc)
        self._ctl("await_startup")
        self.app_running = True

    def stop_app(self) -> None:
        self._ctl("stop_app")
        self.app_running = False

    def start_app(self) -> None:
        self._ctl("start_app")
        self.app_running = True

    def destroy(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.SubprocessError):
                self._ctl("stop", timeout=60)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _env_args(env: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in env.items()]


class DelayProxy:
    """A proxy on its own event loop thread, so the synchronous tests can use it: ``cut()``
    (refuse and drop connections), ``restore()``, ``slow(seconds)``."""

    def __init__(self, target_port: int) -> None:
        self._proxy = TcpProxy(target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._proxy.start())
        self.port = self._proxy.port

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)  # type: ignore[arg-type]

    def slow(self, seconds: float) -> None:
        self._proxy.delay = seconds

    def cut(self) -> None:
        self._call(self._proxy.close())

    def restore(self) -> None:
        self._proxy.delay = 0.0
        self._call(self._proxy.open())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._proxy.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@dataclass
class PrivateServices:
    postgres: PrivatePostgres
    redis: PrivateRedis
    rabbitmq: PrivateRabbitMQ
    proxies: dict[str, DelayProxy]

    def for_stack(self) -> DataServices:
        """The stack connects through the proxies."""
        return DataServices(
            postgres=f"postgresql+asyncpg://postgres@127.0.0.1:{self.proxies['postgres'].port}",
            redis=f"redis://127.0.0.1:{self.proxies['redis'].port}",
            amqp=f"amqp://guest:guest@127.0.0.1:{self.proxies['rabbitmq'].port}/",
        )

    def ensure_up(self) -> None:
        """After a case: whatever it stopped runs again and no proxy is slow or cut."""
        if not self.postgres.running:
            self.postgres.start()
        if not self.redis.running:
            self.redis.start()
        if not self.rabbitmq.app_running:
            self.rabbitmq.start_app()
        for proxy in self.proxies.values():
            proxy.restore()


@contextmanager
def private_services() -> Iterator[PrivateServices]:
    postgres, redis, rabbitmq = PrivatePostgres(), PrivateRedis(), PrivateRabbitMQ()
    proxies: dict[str, DelayProxy] = {}
    try:
        rabbitmq_start = threading.Thread(target=rabbitmq.start)  # the slow one, meanwhile
        rabbitmq_start.start()
        postgres.init()
        redis.start()
        rabbitmq_start.join()
        if not rabbitmq.app_running:
            raise RuntimeError(
                f"the private RabbitMQ did not start:\n{_tail(rabbitmq.dir / 'server.out')}"
            )
        proxies = {
            "postgres": DelayProxy(postgres.port),
            "redis": DelayProxy(redis.port),
            "rabbitmq": DelayProxy(rabbitmq.port),
        }
        yield PrivateServices(postgres, redis, rabbitmq, proxies)
    finally:
        for proxy in proxies.values():
            proxy.close()
        for service in (rabbitmq, redis, postgres):
            with contextlib.suppress(Exception):
                service.destroy()


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except FileNotFoundError:
        return "(no output)"
