"""Key rotation end to end: the auth and orders apps (each with its own migrated database),
orders fetching auth's JWKS, and `auth-service rotate-key` run between requests. Neither app
restarts."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from auth_service.cli import main as auth_cli
from auth_service.main import create_app as create_auth
from auth_service.settings import Settings as AuthSettings
from order_common.dbadmin import drop_database
from order_common.migrations import upgrade
from orders_service.main import create_app as create_orders
from orders_service.settings import Settings as OrdersSettings

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _in_thread(func: Callable[[], Any]) -> Any:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(func).result()


@dataclass
class Platform:
    auth: httpx.AsyncClient
    orders: httpx.AsyncClient
    keys: Path


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    run = secrets.token_hex(5)
    urls = {name: f"{PG}/{name}_rotation_{run}" for name in ("auth", "orders")}
    _in_thread(lambda: upgrade("auth_service:migrations", urls["auth"]))
    _in_thread(lambda: upgrade("orders_service:migrations", urls["orders"]))
    keys = tmp_path / "jwt-keys"
    assert auth_cli(["generate-dev-key", str(keys), "--bits", "2048"]) == 0
    auth_app = create_auth(
        AuthSettings(
            _env_file=None,
            environment="test",
            database_url=urls["auth"],
            redis_url=REDIS_URL,
            redis_key_prefix=f"test:{run}:auth",
            jwt_private_key_path=keys,
            jwt_key_activation_seconds=0,
            jwt_keys_reload_seconds=0,
            password_hash_time_cost=1,
            password_hash_memory_kib=1024,
        )
    )
    try:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(auth_app.router.lifespan_context(auth_app))
            auth = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=auth_app), base_url="http://auth.test"
                )
            )
            orders_app = create_orders(
                OrdersSettings(
                    _env_file=None,
                    environment="test",
                    database_url=urls["orders"],
                    redis_url=REDIS_URL,
                    redis_key_prefix=f"test:{run}:orders",
                    jwks_url="http://auth.test/.well-known/jwks.json",
                    jwks_max_age_seconds=0.5,
                ),
                http_client=auth,
            )
            await stack.enter_async_context(orders_app.router.lifespan_context(orders_app))
            orders = await stack.enter_async_context(
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=orders_app), base_url="http://orders.test"
                )
            )
            yield Platform(auth=auth, orders=orders, keys=keys)
    finally:
        for url in urls.values():
            _in_thread(lambda url=url: asyncio.run(drop_database(url)))


async def test_rotation_keeps_old_tokens_valid_until_their_key_is_removed(
    platform: Platform,
) -> None:
    email = f"rotate-{secrets.token_hex(4)}@example.com"
    registered = await platform.auth.post(
        "/register/", json={"email": email, "password": "secret1"}
    )
    user_id = registered.json()["id"]

    async def token() -> str:
        response = await platform.auth.post(
            "/token/", data={"username": email, "password": "secret1"}
        )
        assert response.status_code == 200, response.text
        value: str = response.json()["access_token"]
        return value

    async def my_orders(access_token: str) -> int:
        response = await platform.orders.get(
            f"/orders/user/{user_id}/", headers={"Authorization": f"Bearer {access_token}"}
        )
        return response.status_code

    old = await token()
    assert await my_orders(old) == 200
    old_key_file = next(platform.keys.iterdir())

    await asyncio.sleep(1.1)  # key files are named by the second
    assert auth_cli(["rotate-key", str(platform.keys), "--bits", "2048"]) == 0
    new = await token()

    old_kid, new_kid = (jwt.get_unverified_header(t)["kid"] for t in (old, new))
    assert new_kid != old_kid
    assert await my_orders(new) == 200  # orders learns the new kid without a restart
    assert await my_orders(old) == 200  # the old key is still published

    old_key_file.unlink()  # retired long enough: the operator (or rotate-key) removes it
    await asyncio.sleep(0.6)  # orders' cached keys pass their max age

    assert await my_orders(old) == 401
    assert await my_orders(new) == 200
    published = (await platform.auth.get("/.well-known/jwks.json")).json()["keys"]
    assert [k["kid"] for k in published] == [new_kid]
