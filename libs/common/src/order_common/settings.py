"""Settings base classes. Each service defines one ``Settings`` subclass with its own env prefix
and builds it in ``create_app()`` (never at import time), so tests can build their own."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "test", "production"]

# Values that must never reach production; they are the documented development defaults.
_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "guest"}


# The schemes PostgreSQL's own tools and operators hand out (CloudNativePG's `uri` key is
# `postgresql://`, Heroku-style ones `postgres://`); only the asyncpg driver is installed.
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
ASYNCPG_SCHEME = "postgresql+asyncpg://"


def asyncpg_database_url(url: str) -> str:
    """``postgresql://`` and ``postgres://`` URLs with the asyncpg driver; anything
    else unchanged. Query parameters are kept as they are: asyncpg reads TLS settings from
    ``PGSSLMODE`` / ``PGSSLROOTCERT`` too, which is how the chart's examples pass them."""
    for scheme in _POSTGRES_SCHEMES:
        if url.startswith(scheme):
            return ASYNCPG_SCHEME + url[len(scheme) :]
    return url


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class ServiceSettings(BaseSettings):
    """Settings every HTTP service shares. Subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_file_encoding="utf-8")

    service_name: str = "service"
    environment: Environment = "development"
    log_level: str = "INFO"

    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
    # `migrate` creates the database when missing, connecting to the `postgres` maintenance
    # database first. Off where the application role may not (managed PostgreSQL,
    # CloudNativePG): `migrate` then connects only to database_url's own database.
    migrate_create_database: bool = True
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)
    # Bounded waits on PostgreSQL: a request fails with a 503 instead of hanging (see db.py).
    db_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="longest wait to open a PostgreSQL connection (then 503)"
    )
    db_command_timeout_seconds: float = Field(
        default=10.0, gt=0, description="longest wait for one SQL statement (then 503)"
    )
    db_pool_timeout_seconds: float = Field(
        default=5.0, gt=0, description="longest wait for a free pooled connection (then 503)"
    )

    # Longer than the gateway's upstream `keepalive_timeout` (60 s): the gateway closes an idle
    # connection first, so it never sends a request on one this server is closing.
    http_keep_alive_seconds: float = Field(
        default=75, gt=0, description="idle kept-alive HTTP connections stay open this long"
    )
    http_graceful_shutdown_seconds: float = Field(
        default=15, gt=0, description="after SIGTERM, requests in flight get this long to finish"
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every key this service writes starts with this prefix, so runs sharing one Redis stay apart.
    redis_key_prefix: str = "op"
    redis_timeout_seconds: float = Field(default=0.5, gt=0)

    # The services refuse larger bodies themselves (413), as the gateway does.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)

    cors_allow_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000"]
    cors_allow_credentials: bool = True

    rate_limit_enabled: bool = True

    jwt_issuer: str = "order-platform-auth"
    jwt_audience: str = "order-platform"

    @field_validator("database_url", mode="after")
    @classmethod
    def _asyncpg_driver(cls, value: str) -> str:
        return asyncpg_database_url(value)

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        return _split_csv(value)

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> ServiceSettings:
        # Browsers reject `*` with credentials anyway; refusing it here makes the mistake loud.
        if self.cors_allow_credentials and "*" in self.cors_allow_origins:
            raise ValueError("CORS: '*' cannot be combined with credentials; list the origins")
        return self

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


class ApiSettings(ServiceSettings):
    """What the HTTP APIs (auth, orders) add: how ``serve`` runs them."""

    workers: int = Field(
        default=0,
        ge=0,
        description="`serve`: uvicorn worker processes sharing the port; 0 means one per core",
    )
    access_log: bool = Field(
        default=False,
        description="`serve`: log a line per request (the gateway already logs each request)",
    )


def refuse_placeholder(name: str, value: SecretStr | str, environment: Environment) -> None:
    """Outside development, refuse secrets that are still a documented placeholder."""
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if environment == "production" and raw.strip().lower() in _PLACEHOLDER_SECRETS:
        raise ValueError(f"{name} is a placeholder; set a real value in production")
