"""The HTTP side of tracing: the server span of each request, or when nothing exports spans,
only its trace ids (see ``order_common.telemetry``)."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from starlette.types import ASGIApp, Receive, Scope, Send

from order_common.telemetry import UNTRACED_URLS, exporting, tracer


def instrument_app(app: FastAPI) -> None:
    """The server span of each request: OpenTelemetry's FastAPI instrumentation when spans are
    exported, else only the trace ids (``TraceIdMiddleware``)."""
    if not exporting():
        app.add_middleware(TraceIdMiddleware)
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=UNTRACED_URLS, exclude_spans=["receive", "send"]
    )


_UNTRACED_PATHS = frozenset(
    f"/{name}{slash}" for name in UNTRACED_URLS.split(",") for slash in ("", "/")
)
_CONTEXT_HEADERS = {b"traceparent": "traceparent", b"tracestate": "tracestate"}


class TraceIdMiddleware:
    """What a request needs from tracing when nothing exports spans: a trace context, so its
    log lines carry a ``trace_id`` and the outbox row it writes carries the context to the
    relay, consumer and worker. The caller's ``traceparent`` is continued, else a trace
    starts; the span is an unsampled one (no attributes, no processors, no export), made by
    the provider's ALWAYS_OFF sampler, and nothing wraps ``receive`` or ``send``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._tracer = tracer()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            header = _CONTEXT_HEADERS.get(name)
            if header is not None:
                carrier[header] = value.decode("latin-1")
        # No traceparent: the current context (empty under a server; an in-process caller's
        # span in tests), so a new trace starts unless one is already under way.
        parent = propagate.extract(carrier) if carrier else otel_context.get_current()
        span = self._tracer.start_span("request", context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)
