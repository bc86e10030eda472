"""The orders application: ``create_app()`` wires settings, routes and the lifespan that owns
every connection pool of the process (``order_common.api``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from starlette.middleware import Middleware

from order_common.api import api_resources, build_api
from order_common.db import asyncpg_dsn
from order_common.jwt import JwksVerifier
from order_common.ratelimit import RateLimiter, parse_limit
from order_common.serve import serving_app
from orders_service.cache import OrderCache
from orders_service.fast_get import CachedGetFastPath, documented_route
from orders_service.notifier import OutboxNotifier
from orders_service.router import TAGS as ORDERS_TAGS
from orders_service.router import router as orders_router
from orders_service.settings import Settings


def create_app(
    settings: Settings | None = None, *, http_client: httpx.AsyncClient | None = None
) -> FastAPI:
    """``http_client`` fetches the JWKS; tests pass one whose transport serves their keys."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with api_resources(app, settings) as stack:
            redis = app.state.redis
            if http_client is None:
                http = httpx.AsyncClient(timeout=settings.jwks_timeout_seconds)
                stack.push_async_callback(http.aclose)
            else:
                http = http_client
            notifier = OutboxNotifier(
                asyncpg_dsn(settings.database_url.get_secret_value()),
                connect_timeout=settings.db_connect_timeout_seconds,
                command_timeout=settings.db_command_timeout_seconds,
            )
            notifier.start()
            stack.push_async_callback(notifier.aclose)
            app.state.outbox_notifier = notifier
            app.state.cache = OrderCache(
                redis, key_prefix=settings.redis_key_prefix, ttl_seconds=settings.cache_ttl_seconds
            )
            app.state.verifier = JwksVerifier(
                settings.jwks_url,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                http=http,
                max_age=settings.jwks_max_age_seconds,
                cache_size=settings.token_cache_size,
            )
            # The limiter shares the cache's client: GET /orders/{id}/ runs both in one script.
            app.state.rate_limiter = RateLimiter(
                redis, key_prefix=settings.redis_key_prefix, enabled=settings.rate_limit_enabled
            )
            app.state.orders_rate_limit = parse_limit(settings.rate_limit_orders)
            yield

    return build_api(
        settings,
        title="Order Platform — orders",
        summary="Places orders and moves them through their status machine.",
        description="Behind the gateway this is `/orders/…`; the gateway's `/docs` shows it "
        "together with the auth API, whose `POST /token/` gives the bearer token.",
        tags=ORDERS_TAGS,
        routers=[orders_router],
        lifespan=lifespan,
        inner_middleware=[
            Middleware(CachedGetFastPath, route=documented_route(orders_router.routes, "get_order"))
        ]
        if settings.fast_get
        else [],
    )


def serve_app() -> FastAPI:
    """The factory ``orders-service serve`` gives uvicorn: run in each worker process."""
    return serving_app(Settings, create_app)
