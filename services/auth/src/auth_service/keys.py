"""The RS256 signing key: loading it, its public JWK and RFC 7638 key id, issuing tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ALGORITHM = "RS256"
MIN_KEY_BITS = 2048
DEV_KEY_BITS = 3072


class SigningKeyError(RuntimeError):
    """The configured private key cannot be used; the message says why and what to do."""


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, without whitespace (RSA: e, kty, n)."""
    required = {"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


@dataclass(frozen=True)
class SigningKey:
    private_key: rsa.RSAPrivateKey
    kid: str
    public_jwk: dict[str, str]

    @classmethod
    def from_private_key(cls, private_key: rsa.RSAPrivateKey) -> SigningKey:
        numbers = private_key.public_key().public_numbers()
        jwk = {"kty": "RSA", "n": _b64url_uint(numbers.n), "e": _b64url_uint(numbers.e)}
        kid = jwk_thumbprint(jwk)
        return cls(
            private_key=private_key,
            kid=kid,
            public_jwk={**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"},
        )


def load_signing_key(path: Path) -> SigningKey:
    """Read and check the PEM key (blocking file I/O: call it through ``to_thread``)."""
    hint = "set AUTH_JWT_PRIVATE_KEY_PATH, or create a development key with "
    hint += "`auth-service generate-dev-key`"
    try:
        pem = path.read_bytes()
    except FileNotFoundError as exc:
        raise SigningKeyError(f"JWT private key file {str(path)!r} does not exist; {hint}") from exc
    except OSError as exc:
        raise SigningKeyError(
            f"JWT private key file {str(path)!r} cannot be read ({exc.strerror}); {hint}"
        ) from exc
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SigningKeyError(
            f"JWT private key file {str(path)!r} is not an unencrypted PEM private key: {exc}"
        ) from exc
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise SigningKeyError(f"JWT private key {str(path)!r} must be an RSA key for {ALGORITHM}")
    if private_key.key_size < MIN_KEY_BITS:
        raise SigningKeyError(
            f"JWT private key {str(path)!r} has {private_key.key_size} bits; "
            f"at least {MIN_KEY_BITS} are required"
        )
    return SigningKey.from_private_key(private_key)


def jwks_document(keys: list[SigningKey]) -> dict[str, list[dict[str, str]]]:
    return {"keys": [key.public_jwk for key in keys]}


def write_new_private_key(path: Path, bits: int = DEV_KEY_BITS) -> bool:
    """Create an RSA private key PEM readable by its owner only. Never overwrites: returns False
    when the file already exists."""
    if path.exists():
        return False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private_key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    # O_EXCL: a file created meanwhile is not clobbered; 0600 from the first byte written.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    return True


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenIssuer:
    def __init__(
        self,
        key: SigningKey,
        *,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds
        self._clock = clock

    def issue_sync(self, subject: str) -> IssuedToken:
        now = int(self._clock())
        claims = {
            "sub": subject,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(
            claims, self.key.private_key, algorithm=ALGORITHM, headers={"kid": self.key.kid}
        )
        return IssuedToken(access_token=token, expires_in=self._ttl)

    async def issue(self, subject: str) -> IssuedToken:
        # An RSA signature costs milliseconds of CPU: keep it off the event loop too.
        return await anyio.to_thread.run_sync(self.issue_sync, subject)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return jwks_document([self.key])
