"""Secrets stay secret: the settings refuse development secrets in production, and a password
inside a connection URL never shows in repr, logs, the OpenAPI document or an error."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from auth_service.settings import Settings

from .conftest import OpenClient, StartApp

# PostgreSQL trusts local connections here: the password is sent and ignored.
PASSWORD = "Pw-secret-77"

PRODUCTION = {
    "environment": "production",
    "database_url": "postgresql://auth:Real-Db-Pw-1@db:5432/auth",
    "redis_url": "redis://:Real-Redis-Pw-2@redis:6379/0",
}


def test_production_refuses_the_development_signing_key(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="development key"):
        Settings(_env_file=None, **PRODUCTION)  # type: ignore[arg-type]

    key = tmp_path / "keys"
    settings = Settings(_env_file=None, jwt_private_key_path=key, **PRODUCTION)  # type: ignore[arg-type]
    assert settings.jwt_private_key_path == key


def test_production_refuses_the_development_database_url(tmp_path: Path) -> None:
    values = {**PRODUCTION, "jwt_private_key_path": tmp_path}
    del values["database_url"]

    with pytest.raises(ValidationError, match="DATABASE_URL") as raised:
        Settings(_env_file=None, **values)  # type: ignore[arg-type]
    assert "development default" in str(raised.value)
    assert "Real-Redis-Pw-2" not in str(raised.value)


async def test_a_url_password_never_reaches_repr_logs_openapi_or_errors(
    make_settings: Callable[..., Settings],
    start_app: StartApp,
    open_client: OpenClient,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with_password = database_url.replace("postgres@", f"postgres:{PASSWORD}@", 1)
    settings = make_settings(database_url=with_password)
    caplog.set_level(logging.DEBUG)

    app = await start_app(settings)
    client = await open_client(app)
    openapi = (await client.get("/openapi.json")).text
    rejected = await client.post("/register/", json={"email": "x", "password": "abc"})
    ready = await client.get("/readyz")

    assert ready.status_code == 200  # the URL with its password is really in use
    assert rejected.status_code == 422
    shown = [repr(settings), str(settings), settings.model_dump_json(), openapi, rejected.text]
    shown += [record.getMessage() for record in caplog.records]
    shown += [str(record.__dict__) for record in caplog.records]
    assert all(PASSWORD not in text for text in shown)
