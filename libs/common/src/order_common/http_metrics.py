"""The HTTP side of the metrics: the middleware that counts and times every request by route
template, and what an API's ``/metrics`` serves (with several uvicorn workers, the sum of all
of theirs, with the latency exemplars none of them could store)."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from order_common.metrics import (
    HTTP_EXEMPLARS,
    HTTP_REQUESTS,
    MULTIPROCESS,
    POOLS,
)
from order_common.telemetry import exemplar

# Set by ``order_common.http.SlashAgnosticRouter`` in the hidden twin's ``openapi_extra``.
SLASH_TWIN = "x-slash-twin"

# The label of requests that matched no route: their paths are whatever clients send.
UNMATCHED_ROUTE = "unmatched"


def _route_label(scope: Scope) -> str:
    """The template of the route that served the request, in its documented form: the
    slash-less (or slashed) twin of a ``SlashAgnosticRouter`` route counts as the route."""
    route: BaseRoute | None = scope.get("route")
    path = getattr(route, "path", None)
    if route is None or not isinstance(path, str):
        return UNMATCHED_ROUTE
    if (getattr(route, "openapi_extra", None) or {}).get(SLASH_TWIN):
        return path[:-1] if path.endswith("/") else path + "/"
    return path


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status. Installed inside the
    tracing middleware, so the latency exemplar names the request's trace."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = _route_label(scope)
            method = scope.get("method", "GET")
            HTTP_REQUESTS.labels(self.service, method, route, str(status)).inc()
            HTTP_EXEMPLARS.observe(
                (self.service, method, route), time.perf_counter() - start, exemplar()
            )


class _WorkersCollector(Collector):
    """Every worker's metrics added up, with this worker's HTTP latency exemplars."""

    def __init__(self) -> None:
        from prometheus_client import multiprocess

        self._files = multiprocess.MultiProcessCollector(None)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        return HTTP_EXEMPLARS.attach(self._files.collect())  # type: ignore[no-untyped-call]


_api_registry: CollectorRegistry | None = None


def api_metrics_registry() -> CollectorRegistry:
    """What an API's ``/metrics`` serves: this process's registry, or with several workers
    the sum of all of theirs (plus the answering worker's own database pool gauges)."""
    global _api_registry
    if not MULTIPROCESS:
        return REGISTRY
    if _api_registry is None:
        registry = CollectorRegistry()
        registry.register(_WorkersCollector())
        registry.register(POOLS)
        _api_registry = registry
    return _api_registry


def metrics_response(request: Request, registry: CollectorRegistry | None = None) -> Response:
    """The registry in the format the scraper asks for (OpenMetrics carries exemplars)."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(registry or api_metrics_registry()), media_type=content_type)
