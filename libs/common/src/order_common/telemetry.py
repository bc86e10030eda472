"""Tracing with OpenTelemetry, configured only by the standard ``OTEL_*`` variables.

Each process calls ``setup_telemetry(name)`` once at start (a Celery prefork worker: in each
child, after the fork). With ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) set,
spans go to that OTLP receiver (``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf``, the
default, or ``grpc``); without it no exporter runs, though trace ids are still made, so the
logs of one request or one order share a ``trace_id`` across processes. ``OTEL_SDK_DISABLED``,
``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` (+ ``_ARG``;
unset: parent-based, ratio ``OTEL_TRACES_SAMPLER_ARG`` or 1), ``OTEL_PROPAGATORS`` and
``OTEL_BSP_*`` work as the specification says. Without an exporter no span is recorded (they
cost next to nothing) but every one still has its ids.

Without an exporter the request path builds no span at all:
``order_common.http_tracing.instrument_app`` installs ``TraceIdMiddleware`` (ids only) instead
of the OpenTelemetry ASGI middleware, and Redis,
SQLAlchemy and httpx are left uninstrumented (``exporting()``). With one, libraries traced:
FastAPI (``instrument_app``), SQLAlchemy (each engine built by
``order_common.db.build_engine``; the asyncpg driver is not traced as well, which would
duplicate every statement), Redis (the clients the services build, never Celery's broker
connection, whose polling would fill the traces), httpx, aio-pika, Celery (in the worker).
What the official instrumentations do not cover carries the W3C context in message headers
through ``inject_headers`` / ``extract_context``: the outbox row (it keeps the context of the
request that wrote it, and the relay's publish continues it), ``Subscriber``'s handling of a
message, the event consumer's ``send_task``, and the worker's kombu publish."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

TRACER_NAME = "order_platform"
# Probes and scrapes would bury the requests that matter.
UNTRACED_URLS = "healthz,readyz,metrics"

_lock = threading.Lock()
_configured_pid: int | None = None
_provider: Any = None
_exporting: bool | None = None  # set by setup_telemetry

__all__ = [
    "SpanKind",
    "current_span",
    "current_trace_ids",
    "error_status",
    "exemplar",
    "extract_context",
    "has_trace_context",
    "inject_headers",
    "instrument_celery",
    "instrument_redis",
    "setup_telemetry",
    "shutdown_telemetry",
    "start_span",
    "trace_ids",
    "tracer",
    "untraced",
]


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _export_requested() -> bool:
    """Whether the environment asks for spans to be exported."""
    if _env_true("OTEL_SDK_DISABLED"):
        return False
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def exporting() -> bool:
    """Whether this process exports spans: what ``setup_telemetry`` found, or before it ran
    (an app built by a test), what the environment asks for. Without export the hot paths
    build no spans at all: the app gets ``TraceIdMiddleware`` instead of the OpenTelemetry
    ASGI middleware, and Redis, SQLAlchemy and httpx are not instrumented."""
    return _export_requested() if _exporting is None else _exporting


def _exporter() -> Any:
    """The OTLP span exporter the environment asks for, or None."""
    if not _export_requested():
        return None
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    if protocol != "http/protobuf":
        logger.warning("OTLP protocol %s is not supported; using http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


def setup_telemetry(service_name: str) -> None:
    """Install the tracer provider and the library instrumentations, once per process.

    ``service_name`` is the ``service.name`` unless ``OTEL_SERVICE_NAME`` (or
    ``OTEL_RESOURCE_ATTRIBUTES``) names one."""
    global _configured_pid, _provider, _exporting
    with _lock:
        if _configured_pid == os.getpid():
            return
        _configured_pid = os.getpid()
        if _env_true("OTEL_SDK_DISABLED"):
            _exporting = False
            logger.info("OpenTelemetry disabled by OTEL_SDK_DISABLED")
            return

        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service_name}))
        exporter = _exporter()
        # Without an exporter nothing is recorded: every span is left unsampled (no attributes,
        # no events, nothing buffered: instrumentations skip their work for such a span), yet
        # each still has its ids, so the logs of one request or one order share a trace_id.
        # With one, the sampler is the standard OTEL_TRACES_SAMPLER (+ _ARG), by default
        # parent-based: a trace is kept or dropped whole, wherever it started.
        provider = TracerProvider(
            resource=resource, sampler=_sampler() if exporter is not None else ALWAYS_OFF
        )
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        _provider = provider
        _exporting = exporter is not None
        _instrument_libraries()
        logger.info(
            "tracing as %s, %s",
            resource.attributes.get(SERVICE_NAME),
            "exporting over OTLP"
            if exporter
            else "no exporter (OTEL_EXPORTER_OTLP_ENDPOINT unset)",
        )


def _sampler() -> Any:
    """None when OTEL_TRACES_SAMPLER names one (the SDK reads it, with its _ARG); unset, a
    parent-based ratio sampler with OTEL_TRACES_SAMPLER_ARG as its ratio (1.0: every trace)."""
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

    if os.environ.get("OTEL_TRACES_SAMPLER", "").strip():
        return None
    try:
        ratio = float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "") or 1.0)
    except ValueError:
        logger.warning("OTEL_TRACES_SAMPLER_ARG is not a number; sampling every trace")
        ratio = 1.0
    return ParentBasedTraceIdRatio(min(1.0, max(0.0, ratio)))


def _instrumentor(module: str, name: str) -> Any:
    """The instrumentor ``module.name``, or None when this process's role does not install it
    (the worker has no httpx or SQLAlchemy: see the extras of order-common)."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)()
    except ImportError:
        return None


def _instrument_each(libraries: list[tuple[str, str]]) -> None:
    for module, name in libraries:
        instrumentor = _instrumentor(module, name)
        if instrumentor is not None and not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def _instrument_libraries() -> None:
    libraries = [("opentelemetry.instrumentation.aio_pika", "AioPikaInstrumentor")]
    if not _exporting:
        # Their spans would only be dropped: skip the wrappers around every statement, command
        # and request. (aio-pika stays: off the API's path, and its spans carry the context.)
        _instrument_each(libraries)
        return
    libraries.append(("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"))
    _instrument_each(libraries)
    sqlalchemy = _instrumentor("opentelemetry.instrumentation.sqlalchemy", "SQLAlchemyInstrumentor")
    if sqlalchemy is not None and not sqlalchemy.is_instrumented_by_opentelemetry:
        # Traces every engine created from now on (see order_common.db). Its declared range
        # stops below SQLAlchemy 2.1, but what it uses (engine events) is unchanged there;
        # tests/observability checks the statement spans.
        sqlalchemy.instrument(skip_dep_check=True)


def shutdown_telemetry() -> None:
    """Export what is buffered; for processes that end without ``atexit`` (Celery children)."""
    provider = _provider
    if provider is not None:
        provider.shutdown()


def instrument_celery() -> None:
    """Trace the tasks this process runs (a Celery worker child), continuing the context the
    sender put in the task's headers."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


def instrument_redis(client: Any) -> None:
    """Trace the commands of one Redis client (sync or asyncio), when spans are exported."""
    if not exporting():
        return
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor.instrument_client(client)


_tracer: tuple[object, Tracer] | None = None


def tracer() -> Tracer:
    """Our tracer, made once per tracer provider: the SDK's ``get_tracer`` builds a new Tracer
    (and adds a warnings filter) on every call, and spans are started per order and message."""
    global _tracer
    provider = trace.get_tracer_provider()
    cached = _tracer
    if cached is None or cached[0] is not provider:
        cached = (provider, trace.get_tracer(TRACER_NAME, tracer_provider=provider))
        _tracer = cached
    return cached[1]


@contextlib.contextmanager
def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A current span of our tracer. ``parent`` (a context extracted from a message or an
    outbox row) replaces the current context for the span and everything inside it."""
    token = otel_context.attach(parent) if parent is not None else None
    try:
        with tracer().start_as_current_span(
            name, kind=kind, attributes=dict(attributes or {})
        ) as span:
            yield span
    finally:
        if token is not None:
            otel_context.detach(token)


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """AMQP and JSON headers: values may be bytes, and keys are taken as they are."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [str(key) for key in carrier]


_getter = _HeaderGetter()


def inject_headers(headers: MutableMapping[str, Any] | None = None) -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``), added to
    ``headers`` when given. Empty when there is no recording context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if headers is not None:
        headers.update(carrier)
    return carrier


def extract_context(headers: Mapping[str, Any] | None) -> otel_context.Context:
    """The trace context carried by ``headers`` (an empty context when there is none)."""
    return propagate.extract(headers or {}, getter=_getter)


def has_trace_context(headers: Mapping[str, Any] | None) -> bool:
    return trace.get_current_span(extract_context(headers)).get_span_context().is_valid


def trace_ids(ctx: otel_context.Context | None = None) -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the span of ``ctx`` (default: the current one) as
    lower-case hex, or None."""
    span_context = trace.get_current_span(ctx).get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


def current_trace_ids() -> tuple[str, str] | None:
    return trace_ids()


def current_span() -> Span:
    return trace.get_current_span()


def error_status(exc: BaseException) -> Status:
    return Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:500])


def messaging_attributes(
    system: str,
    operation: str,
    destination: str,
    *,
    message_id: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The OpenTelemetry messaging attributes of a span that publishes, sends or processes a
    message (``operation``: ``publish``, ``send``, ``process``), plus ``extra`` ones."""
    attributes = {
        "messaging.system": system,
        "messaging.operation.type": operation,
        "messaging.destination.name": destination,
    }
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    attributes.update(extra or {})
    return attributes


def exemplar() -> dict[str, str] | None:
    """The exemplar labels for an observation made now: the current trace id, when that trace
    is sampled (an unsampled one is exported nowhere: its exemplar would link to nothing)."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid or not span_context.trace_flags.sampled:
        return None
    return {"trace_id": format(span_context.trace_id, "032x")}


@contextlib.contextmanager
def untraced() -> Iterator[None]:
    """No instrumentation spans inside (background polling that would only add noise). A span
    started inside with an explicit ``parent`` is traced again, with its children."""
    with suppress_instrumentation():
        yield
