"""Request dependencies, as ``Annotated`` aliases. Resources come from app state (built in the
lifespan); FastAPI caches each dependency per request, so the token is verified once. Each is
``async def`` even without I/O: FastAPI runs a plain ``def`` in the thread pool, a hand-off per
request."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from order_common.errors import TooManyRequests, Unauthorized
from order_common.jwt import JwksVerifier, TokenClaims
from order_common.ratelimit import RateLimiter
from orders_service.cache import CachedOrder, OrderCache
from orders_service.schemas import CURSOR_PATTERN, Cursor
from orders_service.service import Idempotency
from orders_service.settings import Settings
from orders_service.uow import OrdersUnitOfWork

# auto_error=False: a missing or non-Bearer header becomes our 401 with WWW-Authenticate.
_bearer = HTTPBearer(auto_error=False, description="An access token from the auth service.")


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_uow(request: Request) -> OrdersUnitOfWork:
    return OrdersUnitOfWork(
        request.app.state.session_factory,
        on_outbox_commit=request.app.state.outbox_notifier.notify,
    )


UoW = Annotated[OrdersUnitOfWork, Depends(get_uow)]


async def get_cache(request: Request) -> OrderCache:
    cache: OrderCache = request.app.state.cache
    return cache


Cache = Annotated[OrderCache, Depends(get_cache)]


async def get_current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> TokenClaims:
    if credentials is None:
        raise Unauthorized("not authenticated: send Authorization: Bearer <token>")
    verifier: JwksVerifier = request.app.state.verifier
    return await verifier.verify(credentials.credentials)


CurrentUser = Annotated[TokenClaims, Depends(get_current_user)]


RATE_LIMIT_SCOPE = "orders"


async def enforce_rate_limit(request: Request, user: CurrentUser) -> None:
    """Per user, shared by every replica through Redis; 429 with Retry-After when spent."""
    limiter: RateLimiter = request.app.state.rate_limiter
    await limiter.hit(request.app.state.orders_rate_limit, RATE_LIMIT_SCOPE, str(user.user_id))


OrderId = Annotated[uuid.UUID, Path(description="The order's `id`, as `POST /orders/` answered.")]


@dataclass(frozen=True)
class OrderLookup:
    order_id: uuid.UUID
    user_id: int
    cached: CachedOrder | None  # None: not cached, or Redis did not answer
    cache: OrderCache
    uow: OrdersUnitOfWork  # used on a miss only


# The scope key under which ``orders_service.fast_get`` leaves the round trip it made for a
# request it could not answer itself (a miss, someone else's order, a refusal), so that the
# request is counted against the limit once and Redis is asked once.
FIRST_READ = "orders.first_read"


@dataclass(frozen=True)
class FirstRead:
    order_id: str
    user_id: int
    cached: CachedOrder | None
    refused: TooManyRequests | None  # the 429 to answer


def _first_read(request: Request, user_id: int, order_id: uuid.UUID) -> FirstRead | None:
    first: FirstRead | None = request.scope.pop(FIRST_READ, None)
    if first is None or first.user_id != user_id or first.order_id != str(order_id):
        return None
    return first


async def rate_limited_cache_read(
    request: Request, user: CurrentUser, order_id: OrderId
) -> OrderLookup:
    """``enforce_rate_limit`` for ``GET /orders/{id}/``, with the order's cache entry read in
    the same Redis round trip, and all the route needs: the hottest route declares one
    dependency besides the token (each one costs FastAPI's resolver a step per request)."""
    cache: OrderCache = request.app.state.cache
    first = _first_read(request, user.user_id, order_id)
    if first is not None:
        if first.refused is not None:
            raise first.refused
        cached = first.cached
    else:
        cached = await cache.get_rate_limited(
            order_id,
            request.app.state.rate_limiter,
            request.app.state.orders_rate_limit,
            RATE_LIMIT_SCOPE,
            str(user.user_id),
        )
    return OrderLookup(order_id, user.user_id, cached, cache, await get_uow(request))


RateLimitedLookup = Annotated[OrderLookup, Depends(rate_limited_cache_read)]


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: Cursor | None


def _invalid_query(name: str, message: str, value: object, error_type: str) -> Exception:
    # The same 422 shape FastAPI gives for its own query validation.
    return RequestValidationError(
        [{"type": error_type, "loc": ("query", name), "msg": message, "input": value}]
    )


async def get_page_params(
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1, description="Orders per page.")] = None,
    cursor: Annotated[
        str | None,
        Query(
            pattern=CURSOR_PATTERN,
            description="The cursor from the `Link` of the previous page (opaque).",
        ),
    ] = None,
) -> PageParams:
    if limit is None:
        limit = settings.list_default_limit
    elif limit > settings.list_max_limit:
        raise _invalid_query(
            "limit",
            f"Input should be less than or equal to {settings.list_max_limit}",
            limit,
            "less_than_equal",
        )
    decoded = None
    if cursor is not None:
        try:
            decoded = Cursor.decode(cursor)
        except ValueError as exc:
            raise _invalid_query("cursor", str(exc), cursor, "value_error") from exc
    return PageParams(limit=limit, cursor=decoded)


Page = Annotated[PageParams, Depends(get_page_params)]


IDEMPOTENCY_KEY_DESCRIPTION = (
    "Makes the request safe to retry: a request with the same key and the same body returns "
    "the order the first one created (same `id`, same 201, header `Idempotent-Replayed: true`) "
    "instead of a second order, also when the two race. The same key with another body is a "
    "422. Keys are yours alone (another user's identical key is another key) and are "
    "remembered for 24 hours. Use a fresh random value (a UUID) per order."
)


async def get_idempotency(
    settings: SettingsDep,
    key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[!-~]+$",  # visible ASCII: what survives every proxy unchanged
            description=IDEMPOTENCY_KEY_DESCRIPTION,
            examples=["5f0c6a4e-8a43-4e0b-9d0e-1c2b3a4d5e6f"],
        ),
    ] = None,
) -> Idempotency | None:
    if key is None:
        return None
    return Idempotency(key=key, ttl=timedelta(seconds=settings.idempotency_key_ttl_seconds))


IdempotencyDep = Annotated[Idempotency | None, Depends(get_idempotency)]
