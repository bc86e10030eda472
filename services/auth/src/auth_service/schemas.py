from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from order_common.text import StorableText

# The special-use domains (RFC 6761, 7686) email-validator refuses; stated in the schema so a
# client (or a fuzzer) knows the real constraint. Spelled case-insensitively: JSON Schema
# patterns take no flags.
SPECIAL_USE_DOMAINS = ("arpa", "invalid", "local", "localhost", "onion", "test")
_ANY_CASE = "|".join(
    "".join(f"[{c.lower()}{c.upper()}]" for c in name) for name in SPECIAL_USE_DOMAINS
)
EMAIL_PATTERN = rf"^(?!.*[@.](?:{_ANY_CASE})\.?$).*$"

PASSWORD_MIN_LENGTH = 6
PASSWORD_MAX_LENGTH = 128


class UserCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"email": "alice@example.com", "password": "correct-horse"}]
        },
    )

    email: EmailStr = Field(
        description="Unique, compared case-insensitively; the login name. A deliverable "
        "address: special-use domains (.test, .local, .localhost, .invalid, .onion, .arpa) are "
        "refused.",
        json_schema_extra={"pattern": EMAIL_PATTERN},
    )
    password: StorableText = Field(
        min_length=PASSWORD_MIN_LENGTH,
        max_length=PASSWORD_MAX_LENGTH,
        description="6 to 128 characters. Stored only as an argon2id hash.",
    )


class UserRead(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {"id": 1, "email": "alice@example.com", "created_at": "2025-01-31T09:30:00Z"}
            ]
        },
    )

    id: int = Field(description="The user id: the `sub` of your tokens, the orders' `user_id`.")
    email: str = Field(description="Stored lower-cased.")
    created_at: datetime


class TokenResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "access_token": "eyJhbGciOiJSUzI1NiIsImtpZCI6Ii4uLiJ9.eyJzdWIiOiIxIn0.c2ln",
                    "token_type": "bearer",
                    "expires_in": 900,
                }
            ]
        }
    )

    access_token: str = Field(
        description="An RS256 JWT; send it as `Authorization: Bearer <access_token>`."
    )
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a token type, not a secret)
    expires_in: int = Field(description="Seconds until the token expires")


class Jwk(BaseModel):
    kty: Literal["RSA"]
    n: str
    e: str
    kid: str
    alg: Literal["RS256"]
    use: Literal["sig"]


class JwkSet(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "keys": [
                        {
                            "kty": "RSA",
                            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4...",
                            "e": "AQAB",
                            "kid": "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
                            "alg": "RS256",
                            "use": "sig",
                        }
                    ]
                }
            ]
        }
    )

    keys: list[Jwk] = Field(description="Every key a valid token may be signed with (by `kid`).")
