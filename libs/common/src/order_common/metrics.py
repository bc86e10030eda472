"""Prometheus metrics every service shares: HTTP requests, the event bus, rate limits, the
database pool; and how they are exposed (``/metrics`` on the API, a metrics port for the
processes without one).

Latency histograms carry the trace id as an exemplar; Prometheus sees exemplars when it
scrapes in the OpenMetrics format, which both endpoints serve when asked for it.

Needs only prometheus_client: every process imports it. What only an HTTP API needs (the
request middleware, ``/metrics``) is in ``order_common.http_metrics``.

An API served by several uvicorn workers (``order_common.serve``) runs prometheus_client in
multiprocess mode: ``/metrics`` adds up the files of every worker. That mode keeps no
exemplars, so each worker remembers the last exemplar of each HTTP latency bucket it observed
and puts it on the summed bucket when it answers the scrape."""

from __future__ import annotations

import glob
import json
import logging
import os
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client import values as prometheus_values
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

logger = logging.getLogger(__name__)

# prometheus_client chose its mode when first imported, from PROMETHEUS_MULTIPROC_DIR.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MULTIPROCESS = prometheus_values.ValueClass is not prometheus_values.MutexValue

# No `*_created` series beside every counter and histogram: Prometheus has no use for them here.
disable_created_metrics()  # type: ignore[no-untyped-call]

# --- HTTP -----------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests answered, by route template (never the raw path) and status code.",
    ["service", "method", "route", "status"],
)
HTTP_DURATION_BUCKETS = Histogram.DEFAULT_BUCKETS
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by route template.",
    ["service", "method", "route"],
    buckets=HTTP_DURATION_BUCKETS,
)

# --- event bus ------------------------------------------------------------------------------

BUS_RESULTS = ("ok", "duplicate", "retried", "dead_lettered")
BUS_EVENTS_CONSUMED = Counter(
    "bus_events_consumed_total",
    "Bus messages handled, by result: ok, duplicate (already applied; nothing done), retried "
    "(the handler failed; back to the retry queue), dead_lettered (parked in the DLQ).",
    ["subscriber", "event_type", "result"],
)
BUS_PAUSED = Gauge(
    "bus_consumer_paused",
    "1 while a subscriber waits for an unreachable dependency (Redis, PostgreSQL, RabbitMQ) "
    "and takes no new message; its messages keep their attempts.",
    ["subscriber", "event_type"],
)
BUS_OUTAGE_RETRIES = Counter(
    "bus_outage_retries_total",
    "Handler runs repeated because a dependency was unreachable (attempts not counted).",
    ["subscriber", "event_type"],
)
BUS_HANDLING_DURATION = Histogram(
    "bus_event_handling_seconds",
    "Time a subscriber's handler took for one message, whatever its result.",
    ["subscriber", "event_type"],
)

# --- database -------------------------------------------------------------------------------

DB_RECONNECTS = Counter(
    "db_reconnect_retries_total",
    "Use cases run again because their pooled connection turned out to be dead (the pool "
    "has no pre-ping; see order_common.db.retry_on_disconnect).",
)

# --- rate limits ----------------------------------------------------------------------------

RATE_LIMIT_REJECTIONS = Counter(
    "rate_limit_rejections_total",
    "Requests refused with 429 by a rate limit, by scope (token-ip, register-ip, "
    "login-pair, login-ip, login-account, login-in-flight, orders).",
    ["scope"],
)


class ExemplarMemory:
    """The last exemplar of each bucket of one histogram, for the multiprocess mode, which
    stores none. Each worker keeps its own and shares them through a file in the metrics
    directory (rewritten at most once a second, when a new one came), so the worker that
    answers a scrape shows the newest exemplar of any worker (the scraper's keep-alive
    connection may always reach the same one)."""

    FLUSH_INTERVAL = 1.0

    def __init__(self, histogram: Histogram, buckets: Iterable[float]) -> None:
        self._histogram = histogram
        self._name = f"{histogram._name}_bucket"
        self._bounds = [(bound, floatToGoString(bound)) for bound in buckets]  # type: ignore[no-untyped-call]
        self._last: dict[tuple[tuple[str, str], ...], Exemplar] = {}
        self._flushed_at = float("-inf")
        self._dirty = False

    def observe(
        self, labels: tuple[str, ...], amount: float, exemplar: dict[str, str] | None
    ) -> None:
        self._histogram.labels(*labels).observe(amount, exemplar=exemplar)
        if not MULTIPROCESS or not exemplar:
            return
        le = next(text for bound, text in self._bounds if amount <= bound)
        names = (*self._histogram._labelnames, "le")
        key = tuple(sorted(zip(names, (*labels, le), strict=True)))
        self._last[key] = Exemplar(exemplar, amount, time.time())
        self._dirty = True
        if time.monotonic() - self._flushed_at >= self.FLUSH_INTERVAL:
            self.flush()

    def _path(self, pid: int) -> str:
        return os.path.join(os.environ[MULTIPROC_ENV], f"exemplars_{self._name}_{pid}.json")

    def flush(self) -> None:
        if not self._dirty:
            return
        self._flushed_at = time.monotonic()
        self._dirty = False
        entries = [[list(key), e.labels, e.value, e.timestamp] for key, e in self._last.items()]
        path = self._path(os.getpid())
        try:
            with open(f"{path}.tmp", "w") as file:
                json.dump(entries, file)
            os.replace(f"{path}.tmp", path)
        except OSError as exc:  # exemplars are a convenience; never fail a request for them
            logger.debug("could not share exemplars: %s", exc)

    def _everyone(self) -> dict[tuple[tuple[str, str], ...], Exemplar]:
        merged = dict(self._last)
        pattern = os.path.join(os.environ[MULTIPROC_ENV], f"exemplars_{self._name}_*.json")
        for path in glob.glob(pattern):
            try:
                with open(path) as file:
                    entries = json.load(file)
            except (OSError, ValueError):
                continue
            for key_list, labels, value, timestamp in entries:
                key = tuple((str(name), str(text)) for name, text in key_list)
                mine = merged.get(key)
                if mine is None or (mine.timestamp or 0) < timestamp:
                    merged[key] = Exemplar(labels, value, timestamp)
        return merged

    def attach(self, metrics: Iterable[Metric]) -> Iterator[Metric]:
        exemplars = self._everyone()
        for metric in metrics:
            if metric.type == "histogram" and exemplars:
                metric.samples = [
                    sample._replace(
                        exemplar=exemplars.get(tuple(sorted(sample.labels.items())))
                        or sample.exemplar
                    )
                    if sample.name == self._name
                    else sample
                    for sample in metric.samples
                ]
            yield metric


HTTP_EXEMPLARS = ExemplarMemory(HTTP_REQUEST_DURATION, HTTP_DURATION_BUCKETS)


# --- metrics port for the processes without an HTTP API ---------------------------------------


def start_metrics_server(port: int, host: str = "127.0.0.1", *, registry: Any = None) -> bool:
    """Serve ``registry`` (default: this process's) on ``host:port`` from a daemon thread;
    ``port`` 0 turns it off. Returns whether it started."""
    if port == 0:
        return False
    start_http_server(port, addr=host, registry=registry or REGISTRY)
    logger.info("metrics on http://%s:%d/metrics", host, port)
    return True


def multiprocess_registry() -> CollectorRegistry:
    """A registry that adds up the metrics of every process writing to
    ``PROMETHEUS_MULTIPROC_DIR`` (a Celery prefork worker and its children)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


# --- database pool --------------------------------------------------------------------------


class PoolCollector(Collector):
    """Connections of each SQLAlchemy pool of this process, read when scraped."""

    def __init__(self) -> None:
        self._engines: weakref.WeakValueDictionary[int, Engine] = weakref.WeakValueDictionary()

    def add(self, engine: Engine) -> None:
        self._engines[id(engine)] = engine

    def collect(self) -> Iterable[Metric]:
        connections = GaugeMetricFamily(
            "db_pool_connections",
            "Connections of the SQLAlchemy pool by state: checked_out (in use), idle "
            "(open, in the pool), overflow (beyond the pool size).",
            labels=["database", "state"],
        )
        size = GaugeMetricFamily(
            "db_pool_size",
            "Configured connections of the pool (before overflow).",
            labels=["database"],
        )
        for engine in list(self._engines.values()):
            pool: Any = engine.pool
            database = engine.url.database or ""
            try:
                checked_out, idle = pool.checkedout(), pool.checkedin()
                overflow, configured = max(0, pool.overflow()), pool.size()
            except AttributeError:  # a pool kind without counters (NullPool)
                continue
            connections.add_metric([database, "checked_out"], checked_out)
            connections.add_metric([database, "idle"], idle)
            connections.add_metric([database, "overflow"], overflow)
            size.add_metric([database], configured)
        yield connections
        yield size


POOLS = PoolCollector()
REGISTRY.register(POOLS)


def watch_pool(engine: Engine) -> None:
    """Report ``engine``'s pool on this process's metrics."""
    POOLS.add(engine)
