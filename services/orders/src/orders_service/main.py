"""The orders application: ``create_app()`` wires settings, routes and the lifespan that owns
every connection pool of the process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from order_common.cache import build_redis
from order_common.db import asyncpg_dsn, build_engine, build_session_factory
from order_common.health import (
    HEALTH_TAG,
    ReadinessCheck,
    database_check,
    health_router,
    redis_check,
)
from order_common.http import NATIVE_TELEMETRY_OFF, install_middleware
from order_common.http_errors import install_error_handlers
from order_common.jwt import JwksVerifier
from order_common.ratelimit import RateLimiter, parse_limit
from order_common.serve import serving_app
from orders_service.cache import OrderCache
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
        engine = build_engine(
            settings.database_url.get_secret_value(),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            connect_timeout=settings.db_connect_timeout_seconds,
            command_timeout=settings.db_command_timeout_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
        redis = build_redis(settings.redis_url.get_secret_value(), settings.redis_timeout_seconds)
        http = http_client or httpx.AsyncClient(timeout=settings.jwks_timeout_seconds)
        app.state.engine = engine
        app.state.session_factory = build_session_factory(engine)
        app.state.outbox_notifier = notifier = OutboxNotifier(
            asyncpg_dsn(settings.database_url.get_secret_value())
        )
        notifier.start()
        app.state.redis = redis
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
        try:
            yield
        finally:
            if http_client is None:
                await http.aclose()
            await redis.aclose()
            await notifier.aclose()
            await engine.dispose()

    app = FastAPI(
        title="Order Platform — orders",
        summary="Places orders and moves them through their status machine.",
        description="Behind the gateway this is `/orders/…`; the gateway's `/docs` shows it "
        "together with the auth API, whose `POST /token/` gives the bearer token.",
        version="0.1.0",
        openapi_tags=[*ORDERS_TAGS, HEALTH_TAG],
        redirect_slashes=False,
        lifespan=lifespan,
        **NATIVE_TELEMETRY_OFF,
    )
    app.state.settings = settings

    def readiness_checks() -> Mapping[str, ReadinessCheck]:
        return {
            "database": database_check(app.state.engine),
            "redis": redis_check(app.state.redis),
        }

    install_error_handlers(app)
    install_middleware(app, settings)
    app.include_router(health_router(readiness_checks))
    app.include_router(orders_router)
    return app


def serve_app() -> FastAPI:
    """The factory ``orders-service serve`` gives uvicorn: run in each worker process."""
    return serving_app(Settings, create_app)
