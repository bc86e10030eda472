"""Settings by role. Each service defines one ``Settings`` class with its own env prefix, made
of the parts it uses, and builds it in ``create_app()`` (never at import time), so tests can
build their own."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "test", "production"]

# Values that must never reach production; they are the documented development defaults.
_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "guest", "password", "postgres"}


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


# Every part carries the same configuration: pydantic merges the configurations of a class's
# bases in order, so a part with BaseSettings' defaults (no .env, extra="forbid") listed after
# ServiceSettings would replace it. hide_input_in_errors: a rejected value (a URL with its
# password) never reaches the error message, the log that shows it, or a traceback.
SETTINGS_CONFIG = SettingsConfigDict(
    env_file=".env", extra="ignore", env_file_encoding="utf-8", hide_input_in_errors=True
)


class ServiceSettings(BaseSettings):
    """What every process of the platform has: a name, an environment, a log level. A
    service adds the mixins of the parts it really uses (``DatabaseSettings``,
    ``RedisSettings``, ``MetricsPortSettings``, ``order_common.bus.BusSettings``,
    ``order_common.tasks.CelerySettings``) or builds on ``ApiSettings``; subclasses set
    ``env_prefix``. No process inherits a setting it never reads."""

    model_config = SETTINGS_CONFIG

    service_name: str = "service"
    environment: Environment = "development"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> ServiceSettings:
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                refuse_placeholder(
                    name, value, self.environment, development_default=field.get_default()
                )
        return self


class DatabaseSettings(BaseSettings):
    """A service that owns a PostgreSQL database (auth, orders)."""

    model_config = SETTINGS_CONFIG

    # Connection URLs carry passwords: SecretStr keeps them out of repr, logs and errors.
    database_url: SecretStr = SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
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

    @field_validator("database_url", mode="after")
    @classmethod
    def _asyncpg_driver(cls, value: SecretStr) -> SecretStr:
        return SecretStr(asyncpg_database_url(value.get_secret_value()))


class RedisSettings(BaseSettings):
    """A service that keeps state in Redis (cache, rate limits, de-duplication markers)."""

    model_config = SETTINGS_CONFIG

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    # Every key this service writes starts with this prefix, so runs sharing one Redis stay apart.
    redis_key_prefix: str = "op"
    redis_timeout_seconds: float = Field(default=0.5, gt=0)


class MetricsPortSettings(BaseSettings):
    """A process without an HTTP API serves its Prometheus metrics on a port of its own
    (each service sets its default port)."""

    model_config = SETTINGS_CONFIG

    metrics_port: int = Field(
        default=0, ge=0, le=65535, description="port of its Prometheus metrics; 0 turns it off"
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="address the metrics port listens on (`0.0.0.0` in a container)",
    )


class ApiSettings(ServiceSettings, DatabaseSettings, RedisSettings):
    """An HTTP API (auth, orders): its database and Redis, and how ``serve`` runs it."""

    workers: int = Field(
        default=0,
        ge=0,
        description="`serve`: uvicorn worker processes sharing the port; 0 means one per core",
    )
    access_log: bool = Field(
        default=False,
        description="`serve`: log a line per request (the gateway already logs each request)",
    )
    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="`serve`: proxies (the gateway) whose X-Forwarded-For sets the client IP; "
        "comma-separated IPs or CIDRs",
    )

    # Longer than the gateway's upstream `keepalive_timeout` (60 s): the gateway closes an idle
    # connection first, so it never sends a request on one this server is closing.
    http_keep_alive_seconds: float = Field(
        default=75, gt=0, description="idle kept-alive HTTP connections stay open this long"
    )
    http_graceful_shutdown_seconds: float = Field(
        default=15, gt=0, description="after SIGTERM, requests in flight get this long to finish"
    )

    # The services refuse larger bodies themselves (413), as the gateway does.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1)

    cors_allow_origins: Annotated[list[str], NoDecode] = ["http://localhost:3000"]
    cors_allow_credentials: bool = True

    rate_limit_enabled: bool = True

    jwt_issuer: str = "order-platform-auth"
    jwt_audience: str = "order-platform"

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _parse_origins(cls, value: object) -> object:
        return _split_csv(value)

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> ApiSettings:
        # Browsers reject `*` with credentials anyway; refusing it here makes the mistake loud.
        if self.cors_allow_credentials and "*" in self.cors_allow_origins:
            raise ValueError("CORS: '*' cannot be combined with credentials; list the origins")
        return self


def _url_password(raw: str) -> str | None:
    """The password of a URL (``scheme://user:password@host``); None when it has none."""
    if "://" not in raw:
        return None
    try:
        return urlsplit(raw).password
    except ValueError:
        return None


def refuse_placeholder(
    name: str,
    value: SecretStr | str,
    environment: Environment,
    *,
    development_default: Any = None,
) -> None:
    """Outside development (``development``, and ``test``, which runs against the same local
    services), refuse a secret that is still a documented placeholder: the value itself, the
    password of a URL (``amqp://guest:guest@…``), or the field's development default. The
    message names the setting, never its value."""
    if environment != "production":
        return
    raw = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(development_default, SecretStr):
        development_default = development_default.get_secret_value()
    setting = name.upper()
    if raw.strip().lower() in _PLACEHOLDER_SECRETS:
        raise ValueError(f"{setting} is a placeholder; set a real value in production")
    password = _url_password(raw)
    if password is not None and password.strip().lower() in _PLACEHOLDER_SECRETS:
        raise ValueError(f"{setting} has a placeholder password; set a real one in production")
    if development_default is not None and raw == development_default:
        raise ValueError(f"{setting} is still the development default; set the production value")
