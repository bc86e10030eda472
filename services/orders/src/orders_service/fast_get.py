"""The lean path of the hottest request: a cached ``GET /orders/{id}/`` answered without the
framework. What the FastAPI route does for it -- route matching, dependency solving, the request
and response objects, four middleware layers -- costs several times the request's one Redis
round trip, so a request this middleware can answer whole never reaches them.

It answers only when the answer is certain to be the route's own, byte for byte:
``GET /orders/<id>/`` (or without the slash) with the id in its canonical form, a ``Bearer``
token that the verifier has already checked and would answer from its cache now
(``JwksVerifier.remembered``), no ``Origin`` (CORS) and no body; then the same single round trip
the route makes (the rate limit and the cache entry, ``OrderCache.get_rate_limited``), and on a
hit of the token's owner, the stored bytes with the route's headers.

Everything else goes on to the app unchanged. A request it read Redis for but cannot answer --
a miss, someone else's order, a refusal -- carries that read on (``deps.FirstRead``), so the
route counts it against the rate limit once and asks Redis once: the 404, the 429 with
``Retry-After``, the database on a miss or when Redis is down are the route's own answers.

It sits inside the tracing, request-id and metrics middlewares (``build_api(inner_middleware=)``),
so its answers carry the trace context in any log line, the ``X-Request-ID`` header, and are
counted under the route's own labels (it names the route in the scope, as routing does)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from order_common.errors import TooManyRequests
from order_common.http_metrics import SLASH_TWIN
from orders_service.deps import FIRST_READ, RATE_LIMIT_SCOPE, FirstRead

# Only the form ``str(uuid)`` gives (what the API answers in ``id``): the key of the cache entry
# is that string. Any other spelling FastAPI accepts goes the long way.
_ORDER_PATH = re.compile(
    r"/orders/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/?"
)
# Headers that make the route's answer differ (CORS) or that mean a body to read or refuse.
_NOT_FAST = frozenset({b"origin", b"content-length", b"transfer-encoding"})
_CONTENT_TYPE = (b"content-type", b"application/json")
# What CORSMiddleware adds to its answer to any request without an Origin.
_VARY = (b"vary", b"Origin")


def documented_route(routes: Sequence[BaseRoute], name: str) -> APIRoute:
    """The route called ``name`` as the schema documents it (not its slash twin): the one the
    metrics label requests with."""
    for route in routes:
        if (
            isinstance(route, APIRoute)
            and route.name == name
            and not (route.openapi_extra or {}).get(SLASH_TWIN)
        ):
            return route
    raise LookupError(f"no route named {name!r}")


def _bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The token of the first ``Authorization: Bearer``, as ``HTTPBearer`` reads it; None when
    there is none or the request has a header that takes it off the fast path."""
    authorization = None
    for name, value in headers:
        if name == b"authorization":
            if authorization is None:
                authorization = value
        elif name in _NOT_FAST:
            return None
    if authorization is None:
        return None
    scheme, _, token = authorization.decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class CachedGetFastPath:
    def __init__(self, app: ASGIApp, route: APIRoute) -> None:
        self.app = app
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        match = _ORDER_PATH.fullmatch(scope["path"])
        token = _bearer_token(scope["headers"]) if match is not None else None
        if match is None or token is None:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        claims = state.verifier.remembered(token)
        if claims is None:
            await self.app(scope, receive, send)
            return
        order_id = match[1]
        refused = None
        try:
            cached = await state.cache.get_rate_limited(
                uuid.UUID(order_id),
                state.rate_limiter,
                state.orders_rate_limit,
                RATE_LIMIT_SCOPE,
                str(claims.user_id),
            )
        except TooManyRequests as exc:
            cached, refused = None, exc
        if cached is None or cached.user_id != claims.user_id:
            scope[FIRST_READ] = FirstRead(order_id, claims.user_id, cached, refused)
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # what routing would have set: the metrics' route label
        body = cached.body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"%d" % len(body)), _CONTENT_TYPE, _VARY],
            }
        )
        await send({"type": "http.response.body", "body": body})
