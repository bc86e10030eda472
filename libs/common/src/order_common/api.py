"""How an API is put together, the same way for auth and orders: ``build_api`` makes the
FastAPI app (error handlers, middleware, health routes, the service's routers) and
``api_resources`` opens what every API owns for its lifespan -- the database pool and the Redis
client, on ``app.state`` -- and closes it in reverse order. A service's lifespan enters
``api_resources`` and pushes its own resources onto the same stack:

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with api_resources(app, settings) as stack:
            app.state.thing = await stack.enter_async_context(Thing())
            yield

Logging and tracing are configured once per process, by ``order_common.serve.serving_app``
(or by a test), never by ``create_app``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.middleware import Middleware

from order_common.cache import build_redis
from order_common.db import build_engine, build_session_factory
from order_common.health import (
    HEALTH_TAG,
    ReadinessCheck,
    database_check,
    health_router,
    redis_check,
)
from order_common.http import NATIVE_TELEMETRY_OFF, install_middleware
from order_common.http_errors import install_error_handlers
from order_common.settings import ApiSettings

API_VERSION = "0.1.0"


@asynccontextmanager
async def api_resources(app: FastAPI, settings: ApiSettings) -> AsyncIterator[AsyncExitStack]:
    """The database pool (``app.state.engine``, ``app.state.session_factory``) and the Redis
    client (``app.state.redis``) of this process; the stack closes them, and whatever the
    service pushes onto it, in reverse order."""
    async with AsyncExitStack() as stack:
        engine = build_engine(
            settings.database_url.get_secret_value(),
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            connect_timeout=settings.db_connect_timeout_seconds,
            command_timeout=settings.db_command_timeout_seconds,
            pool_timeout=settings.db_pool_timeout_seconds,
        )
        stack.push_async_callback(engine.dispose)
        redis = build_redis(settings.redis_url.get_secret_value(), settings.redis_timeout_seconds)
        stack.push_async_callback(redis.aclose)
        app.state.engine = engine
        app.state.session_factory = build_session_factory(engine)
        app.state.redis = redis
        yield stack


def readiness_checks(app: FastAPI) -> Mapping[str, ReadinessCheck]:
    """What ``/readyz`` checks: the database and Redis that ``api_resources`` opened."""
    return {
        "database": database_check(app.state.engine),
        "redis": redis_check(app.state.redis),
    }


def build_api(
    settings: ApiSettings,
    *,
    title: str,
    summary: str,
    description: str,
    tags: Sequence[dict[str, Any]],
    routers: Iterable[APIRouter],
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    inner_middleware: Sequence[Middleware] = (),
) -> FastAPI:
    """``inner_middleware``: the service's own, inside tracing, request id and metrics
    (``install_middleware``)."""
    app = FastAPI(
        title=title,
        summary=summary,
        description=description,
        version=API_VERSION,
        openapi_tags=[*tags, HEALTH_TAG],
        redirect_slashes=False,
        lifespan=lifespan,
        **NATIVE_TELEMETRY_OFF,
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_middleware(app, settings, inner_middleware)
    app.include_router(health_router(lambda: readiness_checks(app)))
    for router in routers:
        app.include_router(router)
    return app
