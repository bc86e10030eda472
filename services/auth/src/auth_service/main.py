from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
from fastapi import FastAPI

from auth_service.deps import RateLimits
from auth_service.keys import KeyRing, TokenIssuer
from auth_service.login_guard import LoginGuard, LoginGuardPolicy
from auth_service.router import TAGS, router
from auth_service.security import PasswordHasher
from auth_service.settings import Settings
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
from order_common.logging import configure_logging
from order_common.ratelimit import RateLimiter
from order_common.serve import serving_app

logger = logging.getLogger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    # First, so a missing or bad key stops startup before anything else is opened.
    keys = KeyRing(
        settings.jwt_private_key_path,
        activation_seconds=settings.jwt_key_activation_seconds,
        reload_seconds=settings.jwt_keys_reload_seconds,
    )
    await anyio.to_thread.run_sync(keys.load_sync)

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
        rate_limiter = RateLimiter(
            redis, key_prefix=settings.redis_key_prefix, enabled=settings.rate_limit_enabled
        )

        hasher = PasswordHasher(
            time_cost=settings.password_hash_time_cost,
            memory_kib=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
            concurrency=settings.password_hash_concurrency,
        )
        await hasher.prepare()

        app.state.engine = engine
        app.state.session_factory = build_session_factory(engine)
        app.state.redis = redis
        app.state.rate_limiter = rate_limiter
        app.state.login_guard = LoginGuard(
            redis,
            LoginGuardPolicy(
                pair_failures=settings.login_guard_pair_failures,
                block_seconds=settings.login_guard_block_seconds,
                block_max_seconds=settings.login_guard_block_max_seconds,
                ip_failures=settings.login_guard_ip_failures,
                ip_window_seconds=settings.login_guard_ip_window_seconds,
                account_failures=settings.login_guard_account_failures,
                account_window_seconds=settings.login_guard_account_window_seconds,
                forget_seconds=settings.login_guard_forget_seconds,
            ),
            key_prefix=settings.redis_key_prefix,
            enabled=settings.login_guard_enabled and settings.rate_limit_enabled,
        )
        app.state.password_hasher = hasher
        app.state.token_issuer = TokenIssuer(
            keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ttl_seconds=settings.access_token_ttl_seconds,
        )
        logger.info("auth service started", extra={"kid": (await keys.signing_key()).kid})
        yield


def _readiness_checks(app: FastAPI) -> Mapping[str, ReadinessCheck]:
    return {
        "database": database_check(app.state.engine),
        "redis": redis_check(app.state.redis),
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.service_name, settings.log_level, access_log=settings.access_log)

    app = FastAPI(
        title="Order Platform — auth",
        summary="Registers users and signs their access tokens (RS256 JWT, keys as a JWKS).",
        description="Behind the gateway this is `/register/`, `/token/` and "
        "`/.well-known/jwks.json`; the gateway's `/docs` shows it together with the orders API.",
        version="0.1.0",
        openapi_tags=[*TAGS, HEALTH_TAG],
        lifespan=lifespan,
        redirect_slashes=False,
        **NATIVE_TELEMETRY_OFF,
    )
    app.state.settings = settings
    app.state.rate_limits = RateLimits.from_settings(settings)

    install_error_handlers(app)
    install_middleware(app, settings)
    app.include_router(health_router(lambda: _readiness_checks(app)))
    app.include_router(router)
    return app


def serve_app() -> FastAPI:
    """The factory ``auth-service serve`` gives uvicorn: run in each worker process."""
    return serving_app(Settings, create_app)
