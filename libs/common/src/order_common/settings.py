"""Settings base classes. Each service defines one ``Settings`` subclass with its own env prefix
and builds it in ``create_app()`` (never at import time), so tests can build their own."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "test", "production"]

# Values that must never reach production; they are the documented development defaults.
_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "guest"}


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
    db_pool_size: int = Field(default=10, ge=1)
    db_max_overflow: int = Field(default=10, ge=0)

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Every key this service writes starts with this prefix, so runs sharing one Redis stay apart.
    redis_key_prefix: str = "op"
    redis_timeout_seconds: float = Field(default=0.5, gt=0)

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
