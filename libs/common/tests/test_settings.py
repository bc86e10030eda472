"""Database URLs as operators hand them out reach SQLAlchemy with the asyncpg driver."""

from __future__ import annotations

import pytest

from order_common.settings import ServiceSettings, asyncpg_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        # CloudNativePG's `<cluster>-app` Secret, key `uri`.
        (
            "postgresql://app:s3cr3t@orders-db-rw.shop.svc:5432/orders",
            "postgresql+asyncpg://app:s3cr3t@orders-db-rw.shop.svc:5432/orders",
        ),
        # Heroku-style, with a query string that must survive.
        (
            "postgres://u:p@db.example.com/auth?application_name=auth",
            "postgresql+asyncpg://u:p@db.example.com/auth?application_name=auth",
        ),
        ("postgresql+asyncpg://u@h/orders", "postgresql+asyncpg://u@h/orders"),
        # Not ours to rewrite: another driver is an error SQLAlchemy reports by name.
        ("mysql://u@h/db", "mysql://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
    ],
)
def test_postgres_urls_get_the_asyncpg_driver(given: str, expected: str) -> None:
    assert asyncpg_database_url(given) == expected


def test_settings_normalise_the_database_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Settings(ServiceSettings):
        model_config = {"env_prefix": "OPTEST_", "env_file": None}
        # A service redefining the field keeps the base class's normalisation.
        database_url: str = "postgres://postgres@127.0.0.1:5432/x"

    assert Settings().database_url == "postgresql+asyncpg://postgres@127.0.0.1:5432/x"
    monkeypatch.setenv("OPTEST_DATABASE_URL", "postgresql://app:pw@db:5432/orders")
    assert Settings().database_url == "postgresql+asyncpg://app:pw@db:5432/orders"
    assert Settings().migrate_create_database is True
    monkeypatch.setenv("OPTEST_MIGRATE_CREATE_DATABASE", "false")
    assert Settings().migrate_create_database is False
