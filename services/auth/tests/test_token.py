from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from auth_service.keys import jwk_thumbprint
from auth_service.models import User
from auth_service.settings import Settings
from order_common.jwt import JwksVerifier
from order_common.logging import JsonFormatter

from .conftest import BASE_URL, OpenClient, StartApp


async def register(
    client: httpx.AsyncClient,
    email: str,
    password: str = "secret1",  # noqa: S107
) -> int:
    response = await client.post("/register/", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    user_id: int = response.json()["id"]
    return user_id


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post("/token/", data={"username": username, "password": password})


async def test_token_for_valid_credentials_verifies_with_the_common_jwks_verifier(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    settings = make_settings(access_token_ttl_seconds=600)
    app = await start_app(settings)
    client = await open_client(app)
    email = new_email()
    user_id = await register(client, email)

    response = await login(client, email.upper(), "secret1")

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 600
    assert response.headers["cache-control"] == "no-store"

    # The orders service's verifier, fed with this app's own JWKS.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
        verifier = JwksVerifier(
            f"{BASE_URL}/.well-known/jwks.json",
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            http=http,
        )
        claims = await verifier.verify(body["access_token"])

    assert claims.user_id == user_id
    assert claims.raw["sub"] == str(user_id)
    assert claims.raw["iss"] == settings.jwt_issuer
    assert claims.raw["aud"] == settings.jwt_audience
    assert claims.raw["exp"] - claims.raw["iat"] == 600
    assert len(claims.jti) >= 16

    header = jwt.get_unverified_header(body["access_token"])
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert header["alg"] == "RS256"
    assert header["kid"] == jwks["keys"][0]["kid"] == jwk_thumbprint(jwks["keys"][0])


async def test_each_token_gets_its_own_jti(
    client: httpx.AsyncClient, new_email: Callable[[], str]
) -> None:
    email = new_email()
    await register(client, email)

    tokens = [(await login(client, email, "secret1")).json()["access_token"] for _ in range(2)]

    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens}
    assert len(jtis) == 2


async def test_token_with_wrong_password_returns_401_with_www_authenticate(
    client: httpx.AsyncClient, new_email: Callable[[], str]
) -> None:
    email = new_email()
    await register(client, email)

    response = await login(client, email, "wrong-password")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert isinstance(response.json()["detail"], str)


async def test_token_for_unknown_user_returns_the_same_401_as_a_wrong_password(
    client: httpx.AsyncClient, new_email: Callable[[], str]
) -> None:
    email = new_email()
    await register(client, email)

    wrong_password = await login(client, email, "wrong-password")
    unknown_user = await login(client, new_email(), "wrong-password")

    assert unknown_user.status_code == 401
    assert unknown_user.headers["www-authenticate"] == "Bearer"
    assert unknown_user.json() == wrong_password.json()


class _SpyContext:
    """Wraps the CryptContext: records each argon2 call and the thread it ran in."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def record(*args: Any) -> Any:
            self.calls.append((name, threading.get_ident()))
            return method(*args)

        return record


async def test_unknown_user_and_wrong_password_each_verify_one_argon2_hash_off_the_event_loop(
    app: FastAPI,
    client: httpx.AsyncClient,
    new_email: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    email = new_email()
    await register(client, email)
    hasher = app.state.password_hasher
    spy = _SpyContext(hasher._context)
    monkeypatch.setattr(hasher, "_context", spy)
    loop_thread = threading.get_ident()

    await login(client, email, "wrong-password")
    wrong_password_calls = list(spy.calls)
    spy.calls.clear()
    await login(client, new_email(), "wrong-password")
    unknown_user_calls = list(spy.calls)

    assert [name for name, _ in wrong_password_calls] == ["verify_and_update"]
    assert [name for name, _ in unknown_user_calls] == ["verify"]
    assert all(thread != loop_thread for _, thread in wrong_password_calls + unknown_user_calls)


async def test_token_rehashes_a_password_stored_with_old_argon2_parameters(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    new_email: Callable[[], str],
) -> None:
    email = new_email()
    old_app = await start_app(make_settings(password_hash_time_cost=1))
    await register(await open_client(old_app), email)
    new_app = await start_app(make_settings(password_hash_time_cost=2))

    response = await login(await open_client(new_app), email, "secret1")

    assert response.status_code == 200
    async with new_app.state.session_factory() as session:
        stored = (
            await session.execute(select(User.password_hash).where(User.email == email))
        ).scalar_one()
    assert stored.startswith("$argon2id$")
    assert ",t=2," in stored


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"username": "a@example.com", "password": "secret1"}}, 422),
        ({"data": {"username": "a@example.com"}}, 422),
        ({"data": {"username": "a@example.com", "password": "x", "grant_type": "other"}}, 422),
        ({"content": b"--x\r\ngarbage", "headers": {"Content-Type": "multipart/form-data"}}, 400),
    ],
    ids=["json-body", "missing-password", "wrong-grant-type", "multipart-without-boundary"],
)
async def test_token_with_malformed_request_is_a_client_error_not_500(
    client: httpx.AsyncClient, kwargs: dict[str, Any], status: int
) -> None:
    response = await client.post("/token/", **kwargs)

    assert response.status_code == status
    assert "detail" in response.json()


async def test_logs_never_contain_passwords_or_tokens(
    client: httpx.AsyncClient, new_email: Callable[[], str]
) -> None:
    lines: list[str] = []
    formatter = JsonFormatter("auth")

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    handler = Collect(level=logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        email = new_email()
        await register(client, email, "register-pw-1")
        await client.post("/register/", json={"email": email, "password": "duplicate-pw-2"})
        token = (await login(client, email, "register-pw-1")).json()["access_token"]
        await login(client, email, "wrong-pw-3")
    finally:
        root.removeHandler(handler)

    assert any("token issued" in line for line in lines)
    logged = "\n".join(lines)
    for secret in ("register-pw-1", "duplicate-pw-2", "wrong-pw-3", token):
        assert secret not in logged
