from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from order_common.ratelimit import parse_limit
from order_common.settings import ApiSettings


class Settings(ApiSettings):
    model_config = SettingsConfigDict(env_prefix="AUTH_")

    service_name: str = "auth"
    database_url: SecretStr = SecretStr("postgresql+asyncpg://postgres@127.0.0.1:5432/auth")
    redis_key_prefix: str = "auth"

    # Read in the lifespan (not here), so `migrate` works without it while `serve` refuses to
    # start without it.
    jwt_private_key_path: Path = Field(
        default=Path(".dev/jwt-keys"),
        description="the RSA private key that signs tokens: one PEM file, or a directory of "
        "them for rotation (`auth-service rotate-key`; the newest signs, all are published); a "
        "mounted secret in Kubernetes; `auth-service generate-dev-key` makes a development one",
    )
    jwt_key_activation_seconds: float = Field(
        default=30,
        ge=0,
        description="a new key is published this long before it signs, so every replica and "
        "verifier knows it first",
    )
    jwt_keys_reload_seconds: float = Field(
        default=10, ge=0, description="how often the key directory is read again"
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
    password_hash_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="how much lower the CPU priority of the hashing threads is than the "
        "request handling's (Linux nice), so a login storm does not slow other answers; 0 keeps it",
    )

    rate_limit_token_ip: str = Field(
        default="600/minute",
        description="`/token/` requests per client IP, a generous ceiling against floods; "
        "guessing is stopped by the login guard (`AUTH_LOGIN_GUARD_*`)",
    )
    rate_limit_register: str = Field(
        default="20/minute", description="`/register/` requests per client IP"
    )

    # Login protection (auth_service.login_guard): only failed logins count.
    login_guard_enabled: bool = Field(
        default=True,
        description="count failed logins and refuse guessing (also off with "
        "`AUTH_RATE_LIMIT_ENABLED=false`)",
    )
    login_guard_pair_failures: int = Field(
        default=5,
        ge=1,
        description="consecutive failures of one account from one IP before a block",
    )
    login_guard_block_seconds: float = Field(
        default=30, gt=0, description="first block of an account + IP pair; doubles per repeat"
    )
    login_guard_block_max_seconds: float = Field(
        default=900, gt=0, description="longest block of an account + IP pair"
    )
    login_guard_ip_failures: int = Field(
        default=100, ge=1, description="failures from one IP across accounts before it is refused"
    )
    login_guard_ip_window_seconds: int = Field(
        default=900, ge=1, description="window of the per-IP failure count"
    )
    login_guard_account_failures: int = Field(
        default=50,
        ge=1,
        description="failures of one account across IPs past which the IPs that failed for it "
        "are refused (others, the owner's, still get in)",
    )
    login_guard_account_window_seconds: int = Field(
        default=900, ge=1, description="window of the per-account failure count"
    )
    login_guard_pair_in_flight: int = Field(
        default=10,
        ge=1,
        description="logins of one account from one IP checked at once; more wait a second "
        "(429), so parallel guesses cannot outrun the failure count",
    )
    login_guard_forget_seconds: int = Field(
        default=3600,
        ge=1,
        description="a pair's failures and block count are forgotten after this long without one",
    )

    @model_validator(mode="after")
    def _no_development_key_in_production(self) -> Settings:
        # `make dev-key` writes under .dev/: a key that lives in a work tree is no secret.
        if self.environment == "production" and ".dev" in self.jwt_private_key_path.parts:
            raise ValueError(
                "AUTH_JWT_PRIVATE_KEY_PATH points at a development key (.dev/); mount the "
                "production key and point the setting at it"
            )
        return self

    @field_validator("rate_limit_token_ip", "rate_limit_register")
    @classmethod
    def _valid_limit(cls, value: str) -> str:
        parse_limit(value)  # raises ValueError naming the string it cannot read
        return value
