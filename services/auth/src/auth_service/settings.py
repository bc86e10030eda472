from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from order_common.ratelimit import parse_limit
from order_common.settings import ApiSettings


class Settings(ApiSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_")

    service_name: str = "auth"
    database_url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/auth"
    redis_key_prefix: str = "auth"

    # Read in the lifespan (not here), so `migrate` works without it while `serve` refuses to
    # start without it.
    jwt_private_key_path: Path = Field(
        default=Path(".dev/jwt-private.pem"),
        description="PEM file with the RSA private key that signs tokens (a mounted secret in "
        "Kubernetes; `auth-service generate-dev-key` makes a development one)",
    )
    access_token_ttl_seconds: int = Field(
        default=900, ge=60, le=86_400, description="lifetime of an access token"
    )

    # A cost change takes effect for each user at their next login (rehash on verify).
    password_hash_time_cost: int = Field(default=2, ge=1, description="argon2id iterations")
    password_hash_memory_kib: int = Field(
        default=19_456, ge=8, description="argon2id memory per hash, in KiB"
    )
    password_hash_parallelism: int = Field(default=1, ge=1, description="argon2id lanes")
    password_hash_concurrency: int = Field(
        default=4, ge=1, description="hashes computed at once per process (each holds its memory)"
    )

    rate_limit_token_ip: str = Field(
        default="10/minute",
        description="`/token/` attempts per client IP (`limits` notation)",
    )
    rate_limit_token_username: str = Field(
        default="10/minute",
        description="`/token/` attempts per username, across IPs",
    )
    rate_limit_register: str = Field(
        default="20/minute", description="`/register/` requests per client IP"
    )

    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="proxies (the gateway) whose X-Forwarded-For sets the client IP; "
        "comma-separated IPs or CIDRs",
    )

    @field_validator("rate_limit_token_ip", "rate_limit_token_username", "rate_limit_register")
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        parse_limit(value)  # raises ValueError naming the string it cannot read
        return value
