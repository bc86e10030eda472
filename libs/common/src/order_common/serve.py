"""One way to serve an API, used by ``auth-service serve`` and ``orders-service serve``.

uvicorn runs ``workers`` processes (the ``*_WORKERS`` setting; 0 means one per core) sharing
the port. Each worker builds its own app from an import string naming a factory
(``orders_service.main:serve_app``), because a worker is a fresh interpreter (uvicorn spawns
them) and an app object cannot cross into it. The factory reads the settings from the
environment, configures logging and tracing in that process, and builds the app.

With more than one worker the Prometheus metrics run in multiprocess mode: each worker writes
its values to files in a directory private to this run (``PROMETHEUS_MULTIPROC_DIR``, made
here unless set, emptied first, removed at exit), and ``/metrics`` — whichever worker answers
it — adds up every worker's (``order_common.http_metrics.api_metrics_registry``)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import TypeVar

from fastapi import FastAPI

from order_common.settings import ApiSettings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_HEALTHCHECK_SECONDS = 30

S = TypeVar("S", bound=ApiSettings)


def cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def worker_count(configured: int) -> int:
    return configured if configured > 0 else cores()


def prepare_metrics_dir() -> str:
    """The directory every worker writes its metrics to, empty: the one
    PROMETHEUS_MULTIPROC_DIR names, else a new temporary one removed at exit."""
    path = os.environ.get(MULTIPROC_ENV, "")
    if not path:
        path = tempfile.mkdtemp(prefix="order-platform-metrics-")
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith((".db", ".json")):
            os.remove(os.path.join(path, name))
    os.environ[MULTIPROC_ENV] = path
    return path


# glibc's M_MMAP_THRESHOLD. Set explicitly, it also stops glibc from raising it on its own.
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's default


def release_large_allocations() -> bool:
    """Give every large block back to the system when it is freed. glibc raises its mmap
    threshold each time a large mmapped block is freed, so later blocks of that size come from
    the heap, whose free space stays in the process: four concurrent argon2 hashes (19 MiB
    each) would keep ~76 MB resident for good. Pinning the threshold at glibc's default keeps
    such blocks mmapped. Returns whether it applied (glibc only)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def serving_app(settings_class: type[S], create_app: Callable[[S], FastAPI]) -> FastAPI:
    """The body of a service's ``serve_app`` factory: what each worker process runs first."""
    from order_common.logging import configure_logging
    from order_common.telemetry import setup_telemetry

    release_large_allocations()

    settings = settings_class()
    configure_logging(settings.service_name, settings.log_level, access_log=settings.access_log)
    setup_telemetry(settings.service_name)
    return create_app(settings)


def serve(
    factory: str,
    settings: ApiSettings,
    *,
    host: str,
    port: int,
) -> None:
    """Run the app ``factory`` (``"package.module:function"``) under uvicorn with the worker
    count, access log, trusted proxies and timeouts of ``settings``."""
    import uvicorn

    workers = worker_count(settings.workers)
    if workers > 1:
        prepare_metrics_dir()
    uvicorn.run(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # The gateway's X-Forwarded-For becomes request.client (rate limits key on it), but
        # only from the trusted proxies; anyone else's header is ignored.
        # Named, not "auto": uvicorn's fallbacks (h11, the asyncio loop) cost several times
        # as much per request, and "auto" would switch to them silently if a build lacked
        # these (both come with uvicorn[standard]).
        http="httptools",
        loop="uvloop",
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        # The factory configures JSON logging in each worker; uvicorn must not replace it.
        log_config=None,
        access_log=settings.access_log,
        server_header=False,
        # Longer than the gateway keeps an idle upstream connection (60 s): the gateway, not
        # this server, closes it, so no request is ever sent on a connection being closed.
        timeout_keep_alive=int(settings.http_keep_alive_seconds),
        # In-flight requests get this long to finish after SIGTERM.
        timeout_graceful_shutdown=int(settings.http_graceful_shutdown_seconds),
        # A worker is a fresh interpreter that imports the whole service before it answers
        # its supervisor's first ping; on a busy node that takes longer than uvicorn's 5 s.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )
