"""The auth application: ``create_app()`` wires settings, routes and the lifespan that owns the
signing keys and every connection of the process (``order_common.api``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI

from auth_service.deps import RateLimits
from auth_service.keys import KeyRing, TokenIssuer
from auth_service.login_guard import LoginGuard, LoginGuardPolicy
from auth_service.router import TAGS, router
from auth_service.security import PasswordHasher
from auth_service.settings import Settings
from order_common.api import api_resources, build_api
from order_common.ratelimit import RateLimiter
from order_common.serve import serving_app

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # First, so a missing or bad key stops startup before anything else is opened.
        keys = KeyRing(
            settings.jwt_private_key_path,
            activation_seconds=settings.jwt_key_activation_seconds,
            reload_seconds=settings.jwt_keys_reload_seconds,
        )
        await anyio.to_thread.run_sync(keys.load_sync)

        async with api_resources(app, settings) as stack:
            redis = app.state.redis
            hasher = PasswordHasher(
                time_cost=settings.password_hash_time_cost,
                memory_kib=settings.password_hash_memory_kib,
                parallelism=settings.password_hash_parallelism,
                concurrency=settings.password_hash_concurrency,
                niceness=settings.password_hash_niceness,
            )
            stack.callback(hasher.close)
            await hasher.prepare()
            app.state.password_hasher = hasher
            app.state.rate_limiter = RateLimiter(
                redis, key_prefix=settings.redis_key_prefix, enabled=settings.rate_limit_enabled
            )
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
                    pair_in_flight=settings.login_guard_pair_in_flight,
                ),
                key_prefix=settings.redis_key_prefix,
                enabled=settings.login_guard_enabled and settings.rate_limit_enabled,
            )
            app.state.token_issuer = TokenIssuer(
                keys,
                issuer=settings.jwt_issuer,
                audience=settings.jwt_audience,
                ttl_seconds=settings.access_token_ttl_seconds,
            )
            logger.info("auth service started", extra={"kid": (await keys.signing_key()).kid})
            yield

    app = build_api(
        settings,
        title="Order Platform — auth",
        summary="Registers users and signs their access tokens (RS256 JWT, keys as a JWKS).",
        description="Behind the gateway this is `/register/`, `/token/` and "
        "`/.well-known/jwks.json`; the gateway's `/docs` shows it together with the orders API.",
        tags=TAGS,
        routers=[router],
        lifespan=lifespan,
    )
    app.state.rate_limits = RateLimits.from_settings(settings)
    return app


def serve_app() -> FastAPI:
    """The factory ``auth-service serve`` gives uvicorn: run in each worker process."""
    return serving_app(Settings, create_app)
