"""The reference app of `make bench`: minimal FastAPI handlers that do only the core of each
request, served by the same uvicorn settings and worker count as the APIs, so that a ratio
service/reference measured in the same run says how much of the machine our code leaves unused.

- ``/hello``: nothing (the server and the framework alone);
- ``/redis``: one Redis GET of a real order cache entry, its bytes answered as they are;
- ``/jwt``: one RS256 verification of the request's real bearer token (no cache);
- ``/jwt-redis``: both;
- ``/select``: one SELECT of an order by primary key in a transaction (SQLAlchemy + asyncpg);
- ``/insert``: one INSERT of an order in a transaction (SQLAlchemy + asyncpg), in its own
  bench database migrated like the orders one;
- ``/login``: one argon2id verification with auth's parameters and one RS256 signature.

Configured by BENCH_REF_* (see ``RefSettings``); served by ``order_common.serve`` with the
orders service's ORDERS_* server settings: ``python -m bench.reference --port N``."""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Form, HTTPException, Request, Response
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import Redis
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from auth_service.security import PasswordHasher
from auth_service.settings import Settings as AuthSettings
from order_common.jwt import ALGORITHM, REQUIRED_CLAIMS
from order_common.serve import serve
from orders_service.models import Order
from orders_service.settings import Settings as OrdersSettings

PASSWORD = "bench-pass"  # noqa: S105 - the bench users' password, not a secret


class RefSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BENCH_REF_")

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_key: str = "bench:reference:order"
    jwks_url: str = "http://127.0.0.1:8001/.well-known/jwks.json"
    jwt_issuer: str = "order-platform-auth"
    jwt_audience: str = "order-platform"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/bench_reference"
    select_id: uuid.UUID = uuid.UUID(int=1)
    db_pool_size: int = 10
    db_max_overflow: int = 10


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(401, "no bearer token")
    return token


def create_app() -> FastAPI:
    settings = RefSettings()
    orders = Order.__table__

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_async_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        redis = Redis.from_url(settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        async with httpx.AsyncClient(timeout=5) as http:
            jwks = (await http.get(settings.jwks_url)).raise_for_status().json()
        app.state.keys = {
            k["kid"]: jwt.PyJWK(k, algorithm=ALGORITHM).key for k in jwks["keys"] if "kid" in k
        }
        auth = AuthSettings()
        hasher = PasswordHasher(
            time_cost=auth.password_hash_time_cost,
            memory_kib=auth.password_hash_memory_kib,
            parallelism=auth.password_hash_parallelism,
            concurrency=auth.password_hash_concurrency,
        )
        app.state.hasher = hasher
        app.state.password_hash = await hasher.hash(PASSWORD)
        app.state.signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        app.state.redis = redis
        app.state.sessions = async_sessionmaker(engine, expire_on_commit=False)
        try:
            yield
        finally:
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    def verify(request: Request) -> dict[str, Any]:
        token = _bearer(request)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            claims: dict[str, Any] = jwt.decode(
                token,
                request.app.state.keys[kid],
                algorithms=[ALGORITHM],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except (jwt.PyJWTError, KeyError) as exc:
            raise HTTPException(401, f"invalid token: {exc}") from exc
        return claims

    async def redis_get(request: Request) -> bytes:
        raw: bytes | None = await request.app.state.redis.get(settings.redis_key)
        if raw is None:
            raise HTTPException(404, f"{settings.redis_key} is not in Redis")
        return raw

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/redis")
    async def redis_only(request: Request) -> Response:
        return Response(await redis_get(request), media_type="application/json")

    @app.get("/jwt")
    async def jwt_only(request: Request) -> dict[str, Any]:
        return {"sub": verify(request)["sub"]}

    @app.get("/jwt-redis")
    async def jwt_and_redis(request: Request) -> Response:
        verify(request)
        return Response(await redis_get(request), media_type="application/json")

    @app.get("/select")
    async def select_one(request: Request) -> Response:
        sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
        async with sessions() as session, session.begin():
            row = (
                await session.execute(select(orders).where(orders.c.id == settings.select_id))
            ).one()
        return Response(
            json.dumps({"id": str(row.id), "items": row.items, "total": str(row.total_price)}),
            media_type="application/json",
        )

    @app.post("/insert", status_code=201)
    async def insert_one(request: Request) -> dict[str, str]:
        body = json.loads(await request.body())
        sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
        order_id = uuid.uuid4()
        async with sessions() as session, session.begin():
            await session.execute(
                insert(orders).values(
                    id=order_id,
                    user_id=1,
                    items=body["items"],
                    total_price=Decimal(body["total_price"]),
                    status="PENDING",
                )
            )
        return {"id": str(order_id)}

    @app.post("/login")
    async def login(
        request: Request,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
    ) -> dict[str, str]:
        state = request.app.state
        valid, _ = await state.hasher.verify(password, state.password_hash)
        if not valid:
            raise HTTPException(401, "wrong password")
        now = int(time.time())
        claims = {"sub": username, "iat": now, "exp": now + 900, "jti": uuid.uuid4().hex}
        return {"access_token": jwt.encode(claims, state.signing_key, algorithm=ALGORITHM)}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    # Served exactly as `orders-service serve` is: the same function, with the orders
    # settings of this environment (ORDERS_WORKERS, keep-alive, access log).
    serve("bench.reference:create_app", OrdersSettings(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
