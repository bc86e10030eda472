from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auth_service import service
from auth_service.errors import EmailAlreadyRegistered
from auth_service.models import User
from auth_service.repository import AuthUnitOfWork, UserRepository


async def stored_hash(app: FastAPI, email: str) -> str:
    async with app.state.session_factory() as session:
        result = await session.execute(select(User.password_hash).where(User.email == email))
        password_hash: str = result.scalar_one()
        return password_hash


async def test_register_returns_201_with_id_lowercased_email_and_created_at(
    client: httpx.AsyncClient, new_email: Callable[[], str]
) -> None:
    email = new_email()
    response = await client.post(
        "/register/", json={"email": email.replace("user", "User"), "password": "secret1"}
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email", "created_at"}
    assert isinstance(body["id"], int)
    assert body["email"] == email
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None


async def test_register_stores_an_argon2id_hash_not_the_password(
    app: FastAPI, client: httpx.AsyncClient, new_email: Callable[[], str]
) -> None:
    email = new_email()
    await client.post("/register/", json={"email": email, "password": "secret1"})

    password_hash = await stored_hash(app, email)
    assert password_hash.startswith("$argon2id$")
    assert "secret1" not in password_hash


@pytest.mark.parametrize(
    "email", ["not-an-email", "a@", "@example.com", "a b@example.com", "", "x" * 250 + "@ex.com"]
)
async def test_register_with_invalid_email_returns_422(
    client: httpx.AsyncClient, email: str
) -> None:
    response = await client.post("/register/", json={"email": email, "password": "secret1"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "email"]


@pytest.mark.parametrize("password", ["", "12345", "x" * 129])
async def test_register_with_password_too_short_or_too_long_returns_422(
    client: httpx.AsyncClient, new_email: Callable[[], str], password: str
) -> None:
    response = await client.post("/register/", json={"email": new_email(), "password": password})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "password"]


@pytest.mark.parametrize("password", ["123456", "x" * 128])
async def test_register_accepts_passwords_of_6_and_128_characters(
    client: httpx.AsyncClient, new_email: Callable[[], str], password: str
) -> None:
    response = await client.post("/register/", json={"email": new_email(), "password": password})

    assert response.status_code == 201


async def test_register_duplicate_email_differing_only_in_case_returns_409(
    client: httpx.AsyncClient, new_email: Callable[[], str]
) -> None:
    email = new_email()
    first = await client.post("/register/", json={"email": email, "password": "secret1"})
    second = await client.post("/register/", json={"email": email.upper(), "password": "other12"})

    assert first.status_code == 201
    assert second.status_code == 409
    assert isinstance(second.json()["detail"], str)


async def test_concurrent_registrations_of_one_email_create_one_user_and_answer_409(
    client: httpx.AsyncClient, new_email: Callable[[], str]
) -> None:
    email = new_email()
    responses = await asyncio.gather(
        *(
            client.post("/register/", json={"email": email, "password": f"secret{i}"})
            for i in range(5)
        )
    )

    assert sorted(r.status_code for r in responses) == [201, 409, 409, 409, 409]


async def test_register_maps_a_unique_violation_after_the_precheck_to_conflict(
    app: FastAPI, new_email: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race: another request inserts the email between our pre-check and our insert.
    email = new_email()
    uow = AuthUnitOfWork(app.state.session_factory)
    hasher = app.state.password_hasher
    await service.register(uow, hasher, email=email, password="secret1")

    async def precheck_sees_nothing(self: UserRepository, email: str) -> None:
        return None

    monkeypatch.setattr(UserRepository, "get_by_email", precheck_sees_nothing)
    with pytest.raises(EmailAlreadyRegistered):
        await service.register(uow, hasher, email=email, password="secret2")


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (
            "email=a%40example.com&password=secret1",
            {"Content-Type": "application/x-www-form-urlencoded"},
        ),
        ('{"email": "a@example.com", "password": ', {"Content-Type": "application/json"}),
        ('["a@example.com", "secret1"]', {"Content-Type": "application/json"}),
    ],
    ids=["form-body", "truncated-json", "json-array"],
)
async def test_register_with_malformed_body_or_wrong_content_type_returns_422(
    client: httpx.AsyncClient, content: str, headers: dict[str, str]
) -> None:
    response = await client.post("/register/", content=content, headers=headers)

    assert response.status_code == 422


async def test_register_rejects_unknown_fields_with_422(
    client: httpx.AsyncClient, new_email: Callable[[], str]
) -> None:
    response = await client.post(
        "/register/", json={"email": new_email(), "password": "secret1", "is_admin": True}
    )

    assert response.status_code == 422


async def test_register_and_login_succeed_after_the_database_dropped_its_connections(
    app: FastAPI, client: httpx.AsyncClient, new_email: Callable[[], str]
) -> None:
    email = new_email()
    assert (
        await client.post("/register/", json={"email": new_email(), "password": "secret1"})
    ).is_success

    async def drop_every_connection() -> None:
        # A database restart or failover: every backend of the test database is terminated,
        # from a connection outside the app's pool.
        engine = create_async_engine(app.state.settings.database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                await connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
        finally:
            await engine.dispose()

    retries = REGISTRY.get_sample_value("db_reconnect_retries_total") or 0.0
    await drop_every_connection()
    registered = await client.post("/register/", json={"email": email, "password": "secret1"})
    assert registered.status_code == 201, registered.text
    assert REGISTRY.get_sample_value("db_reconnect_retries_total") == retries + 1
    await drop_every_connection()
    token = await client.post("/token/", data={"username": email, "password": "secret1"})
    assert token.status_code == 200, token.text
