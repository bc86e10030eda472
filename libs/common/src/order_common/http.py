"""HTTP plumbing every service uses: slash-agnostic routes, request ids, CORS, request metrics
and tracing."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from order_common.body_limit import BodyLimitMiddleware
from order_common.http_metrics import SLASH_TWIN, MetricsMiddleware
from order_common.http_tracing import instrument_app
from order_common.logging import request_id_var
from order_common.settings import ApiSettings

REQUEST_ID_HEADER = "X-Request-ID"


def _native_telemetry_off() -> dict[str, Any]:
    """``FastAPI(**NATIVE_TELEMETRY_OFF)``: FastAPI's own OpenTelemetry bridge (recent FastAPI
    versions) switches itself on once a tracer provider is installed, and would trace every
    request a second time, with a span per dependency; ``order_common.telemetry`` traces each
    request once (or, exporting nothing, only keeps its ids)."""
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {
        "telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}
    }


NATIVE_TELEMETRY_OFF = _native_telemetry_off()


class SlashAgnosticRouter(APIRouter):
    """Serves every path both with and without its trailing slash, with no redirect.

    The documented form (as declared) is in the OpenAPI schema; the twin is hidden from it."""

    def add_api_route(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().add_api_route(path, endpoint, **kwargs)
        twin = path[:-1] if path.endswith("/") else path + "/"
        # The twin of "/" is "", which is a real path ("/orders") when the router has a prefix.
        if twin != path and (twin or self.prefix):
            twin_kwargs = dict(kwargs, include_in_schema=False)
            twin_kwargs.pop("operation_id", None)
            # Marks the twin (the route is hidden, so this never shows in the schema): the
            # metrics count its requests under the documented route.
            twin_kwargs["openapi_extra"] = {**(kwargs.get("openapi_extra") or {}), SLASH_TWIN: True}
            super().add_api_route(twin, endpoint, **twin_kwargs)


class RequestIdMiddleware:
    """Keeps the gateway's X-Request-ID (or makes one), puts it in the logs and the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if 0 < len(incoming) <= 128 else uuid.uuid4().hex
        token = request_id_var.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def install_middleware(
    app: FastAPI, settings: ApiSettings, inner: Sequence[Middleware] = ()
) -> None:
    """From the outside in: tracing (the server span), request id, metrics, then ``inner``
    (a service's own, in order: a fast path that must still be traced, identified and
    counted), CORS, body limit."""
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_allow_origins,
        allow_credentials=settings.cors_allow_credentials,
        allow_methods=["GET", "POST", "PATCH", "OPTIONS"],
        allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
        expose_headers=["Link", "Retry-After", REQUEST_ID_HEADER],
    )
    for middleware in reversed(inner):
        app.add_middleware(middleware.cls, *middleware.args, **middleware.kwargs)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)
    app.add_middleware(RequestIdMiddleware)
    instrument_app(app)
