"""Database URLs as operators hand them out reach SQLAlchemy with the asyncpg driver."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from order_common.settings import (
    ApiSettings,
    DatabaseSettings,
    MetricsPortSettings,
    RedisSettings,
    ServiceSettings,
    asyncpg_database_url,
)


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
    class Settings(ServiceSettings, DatabaseSettings):
        model_config = {"env_prefix": "OPTEST_", "env_file": None}
        # A service redefining the field keeps the base class's normalisation.
        database_url: SecretStr = SecretStr("postgres://postgres@127.0.0.1:5432/x")

    assert (
        Settings().database_url.get_secret_value()
        == "postgresql+asyncpg://postgres@127.0.0.1:5432/x"
    )
    monkeypatch.setenv("OPTEST_DATABASE_URL", "postgresql://app:pw@db:5432/orders")
    assert (
        Settings().database_url.get_secret_value() == "postgresql+asyncpg://app:pw@db:5432/orders"
    )
    assert Settings().migrate_create_database is True
    monkeypatch.setenv("OPTEST_MIGRATE_CREATE_DATABASE", "false")
    assert Settings().migrate_create_database is False


# --- secrets ---------------------------------------------------------------------------------

REAL = {
    "database_url": "postgresql://app:Xk2-real-db-pw@db:5432/orders",
    "redis_url": "redis://:Rd-real-pw-9@redis:6379/0",
}


def _settings(**values: object) -> ApiSettings:
    return ApiSettings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("database_url", "postgresql://app:changeme@db:5432/orders", "placeholder password"),
        ("database_url", "postgresql://postgres:postgres@db:5432/orders", "placeholder password"),
        ("redis_url", "redis://:secret@redis:6379/0", "placeholder password"),
        ("redis_url", "redis://127.0.0.1:6379/0", "development default"),
        ("database_url", "changeme", "placeholder"),
    ],
)
def test_production_refuses_a_placeholder_or_development_secret(
    field: str, value: str, message: str
) -> None:
    with pytest.raises(ValidationError, match=message) as raised:
        _settings(environment="production", **{**REAL, field: value})

    assert field.upper() in str(raised.value)
    # The message names the setting, never its value (nor the other secrets given).
    for secret in (value, *REAL.values()):
        assert secret not in str(raised.value)


def test_production_refuses_the_guest_account_of_rabbitmq() -> None:
    from order_common.bus import BusSettings

    class Settings(ServiceSettings, DatabaseSettings, RedisSettings, BusSettings):
        pass

    with pytest.raises(ValidationError, match="AMQP_URL has a placeholder password"):
        Settings(_env_file=None, environment="production", **REAL)  # type: ignore[arg-type]
    real = Settings(
        _env_file=None,
        environment="production",
        amqp_url="amqp://shop:Rb-real-pw-3@bus:5672/",  # type: ignore[arg-type]
        **REAL,  # type: ignore[arg-type]
    )
    assert real.amqp_url.get_secret_value().startswith("amqp://shop:")


@pytest.mark.parametrize("environment", ["development", "test"])
def test_the_development_defaults_are_fine_outside_production(environment: str) -> None:
    settings = _settings(environment=environment)
    assert settings.redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"


def test_production_accepts_real_secrets() -> None:
    settings = _settings(environment="production", **REAL)
    assert settings.database_url.get_secret_value() == (
        "postgresql+asyncpg://app:Xk2-real-db-pw@db:5432/orders"
    )


def test_secrets_never_appear_in_repr_dumps_or_validation_errors() -> None:
    settings = _settings(**REAL)

    shown = [repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())]
    for text in shown:
        assert "Xk2-real-db-pw" not in text
        assert "Rd-real-pw-9" not in text
    with pytest.raises(ValidationError) as raised:
        # A URL given in the wrong form: pydantic would quote the input it refuses.
        _settings(database_url=REAL["database_url"], redis_url=[REAL["redis_url"]])
    assert "Rd-real-pw-9" not in str(raised.value)
    assert "Xk2-real-db-pw" not in str(raised.value)


def test_a_process_has_only_the_settings_of_the_parts_it_uses() -> None:
    """A worker-like process (Redis + metrics port) reads no database, CORS or JWT setting, so
    none is documented for it; an API has them all."""

    class Worker(ServiceSettings, RedisSettings, MetricsPortSettings):
        pass

    fields = set(Worker.model_fields)
    assert {"redis_url", "metrics_port", "environment"} <= fields
    assert not fields & {"database_url", "db_pool_size", "cors_allow_origins", "jwt_issuer"}
    assert {"database_url", "cors_allow_origins", "jwt_issuer", "workers"} <= set(
        ApiSettings.model_fields
    )
