"""`/healthz` says the process is alive; `/readyz` says its dependencies answer; `/metrics` is
the process's Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from order_common.http import SlashAgnosticRouter
from order_common.http_metrics import metrics_response
from order_common.telemetry import untraced

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[object]]


def database_check(engine: AsyncEngine) -> ReadinessCheck:
    async def check() -> None:
        async with engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    return check


def redis_check(redis: Redis) -> ReadinessCheck:
    async def check() -> None:
        await redis.ping()

    return check


HEALTH_TAG = {
    "name": "health",
    "description": "Probes for the orchestrator, answered by each replica on its own port. The "
    "gateway does not route them (its own `/healthz` says only that the gateway is up).",
}


def health_router(
    checks: Callable[[], Mapping[str, ReadinessCheck]], timeout: float = 2.0
) -> APIRouter:
    """``checks`` returns the named dependency probes (built lazily: they live on app state)."""
    router = SlashAgnosticRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: every dependency answers",
        responses={
            503: {
                "description": "A dependency does not answer; `checks` says which and why.",
                "content": {
                    "application/json": {
                        "example": {
                            "status": "unavailable",
                            "checks": {"database": "ok", "redis": "failed: TimeoutError"},
                        }
                    }
                },
            }
        },
    )
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in checks().items():
            try:
                # Probes come every few seconds: their queries would bury the real traces.
                with untraced():
                    await asyncio.wait_for(check(), timeout)
                results[name] = "ok"
            except Exception as exc:  # any failure means not ready; say which and why
                logger.warning("readiness check %s failed: %s", name, exc)
                results[name] = f"failed: {type(exc).__name__}"
        ready = all(value == "ok" for value in results.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": results},
            status_code=200 if ready else 503,
        )

    @router.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        return metrics_response(request)

    return router
