"""The RS256 signing keys: loading them, their public JWKs and RFC 7638 key ids, rotation,
issuing tokens.

``AUTH_JWT_PRIVATE_KEY_PATH`` names one PEM file (one key, no rotation) or a directory of them
(a key ring). In a ring each file is named by its creation time (``20261203T080000Z.pem``, as
``auth-service rotate-key`` writes them); the newest key that has been there for the activation
delay signs, and every key in the directory is published in the JWKS, so tokens signed with an
older key verify until they expire. The ring re-reads the directory every few seconds: a
rotation needs no restart. The delay lets every replica (and verifier) see a new key before any
token carries it."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"
KEY_SUFFIX = ".pem"
_STAMP = "%Y%m%dT%H%M%SZ"
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
class StoredKey:
    key: SigningKey
    path: Path
    created_at: float  # from the file name's time stamp, else the file's mtime


def key_file_name(created_at: float) -> str:
    return datetime.fromtimestamp(created_at, UTC).strftime(_STAMP) + KEY_SUFFIX


def _created_at(path: Path) -> float:
    try:
        return (
            datetime.strptime(path.name.removesuffix(KEY_SUFFIX), _STAMP)
            .replace(tzinfo=UTC)
            .timestamp()
        )
    except ValueError:
        return path.stat().st_mtime


def key_files(path: Path) -> list[Path]:
    """The PEM files of ``path``: the file itself, or a directory's ``*.pem``."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == KEY_SUFFIX and p.is_file())
        if not files:
            raise SigningKeyError(
                f"JWT key directory {str(path)!r} holds no {KEY_SUFFIX} file; create one with "
                "`auth-service rotate-key` (or `generate-dev-key`)"
            )
        return files
    return [path]


KeyCache = dict[tuple[Path, int, int], "StoredKey"]


def load_key_ring(path: Path, cache: KeyCache | None = None) -> list[StoredKey]:
    """Every key of ``path``, oldest first (blocking file I/O: call it through ``to_thread``).
    ``cache`` (by path, mtime and size) spares parsing a file again that did not change; it is
    updated in place."""
    previous = dict(cache or {})
    if cache is not None:
        cache.clear()
    keys = []
    for file in key_files(path):
        try:
            stat = file.stat()
            marker = (file, stat.st_mtime_ns, stat.st_size)
        except OSError:
            marker = None
        stored = previous.get(marker) if marker else None
        if stored is None:
            stored = StoredKey(load_signing_key(file), file, _created_at(file))
        if cache is not None and marker is not None:
            cache[marker] = stored
        keys.append(stored)
    return sorted(keys, key=lambda k: (k.created_at, k.path.name))


def active_key(keys: list[StoredKey], *, now: float, activation_seconds: float) -> StoredKey:
    """The newest key that has been published for ``activation_seconds``; the oldest when none
    has (a fresh ring)."""
    ready = [k for k in keys if k.created_at + activation_seconds <= now]
    return ready[-1] if ready else keys[0]


def retired_keys(
    keys: list[StoredKey], *, now: float, activation_seconds: float, keep_seconds: float
) -> list[StoredKey]:
    """Keys that no live token needs: their successor has been signing for ``keep_seconds``
    (the token lifetime and a margin)."""
    active = active_key(keys, now=now, activation_seconds=activation_seconds)
    retired = []
    for older, newer in itertools.pairwise(keys):
        if older is active or newer.created_at > active.created_at:
            break
        if newer.created_at + activation_seconds + keep_seconds <= now:
            retired.append(older)
    return retired


def rotate(
    directory: Path,
    *,
    bits: int = DEV_KEY_BITS,
    activation_seconds: float,
    keep_seconds: float,
    prune: bool = True,
    now: float | None = None,
) -> tuple[StoredKey, list[StoredKey]]:
    """Add a new key to the ring ``directory`` and remove the keys no live token needs.
    Returns the new key and the removed ones."""
    if directory.exists() and not directory.is_dir():
        raise SigningKeyError(
            f"{str(directory)!r} is a single key file; rotation needs a key directory: point "
            "AUTH_JWT_PRIVATE_KEY_PATH at a directory and move the key into it"
        )
    now = time.time() if now is None else now
    created = now
    while not write_new_private_key(directory / key_file_name(created), bits=bits):
        created += 1  # two rotations within one second: the next free name
    path = directory / key_file_name(created)
    removed = []
    if prune:
        keys = load_key_ring(directory)
        for old in retired_keys(
            keys, now=now, activation_seconds=activation_seconds, keep_seconds=keep_seconds
        ):
            old.path.unlink(missing_ok=True)
            removed.append(old)
    return StoredKey(load_signing_key(path), path, _created_at(path)), removed


class KeyRing:
    """The keys of ``AUTH_JWT_PRIVATE_KEY_PATH``, re-read at most every ``reload_seconds``.
    A failed re-read keeps the keys it had (a key directory being swapped, a bad file)."""

    def __init__(
        self,
        path: Path,
        *,
        activation_seconds: float = 0.0,
        reload_seconds: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._activation = activation_seconds
        self._reload = reload_seconds
        self._clock = clock
        self._keys: list[StoredKey] = []
        self._cache: KeyCache = {}
        self._loaded_at = float("-inf")

    def load_sync(self) -> None:
        """Read the keys; raises ``SigningKeyError`` (at startup a bad key must stop it)."""
        cache = dict(self._cache)
        self._keys = load_key_ring(self.path, cache)
        self._cache = cache
        self._loaded_at = time.monotonic()

    async def _fresh(self) -> list[StoredKey]:
        if time.monotonic() - self._loaded_at >= self._reload:
            before = [k.key.kid for k in self._keys]
            try:
                await anyio.to_thread.run_sync(self.load_sync)
            except SigningKeyError as exc:
                self._loaded_at = time.monotonic()
                logger.warning("JWT keys not reloaded, keeping the current ones: %s", exc)
            after = [k.key.kid for k in self._keys]
            if after != before:
                logger.info("JWT keys reloaded", extra={"kids": after})
        return self._keys

    async def signing_key(self) -> SigningKey:
        keys = await self._fresh()
        return active_key(keys, now=self._clock(), activation_seconds=self._activation).key

    async def published(self) -> list[SigningKey]:
        return [k.key for k in await self._fresh()]


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int


class TokenIssuer:
    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self._issuer = issuer
        self._audience = audience
        self._ttl = ttl_seconds
        self._clock = clock

    def issue_sync(self, key: SigningKey, subject: str) -> IssuedToken:
        now = int(self._clock())
        claims = {
            "sub": subject,
            "iss": self._issuer,
            "aud": self._audience,
            "iat": now,
            "exp": now + self._ttl,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
        return IssuedToken(access_token=token, expires_in=self._ttl)

    async def issue(self, subject: str) -> IssuedToken:
        key = await self.keys.signing_key()
        # An RSA signature costs milliseconds of CPU: keep it off the event loop too.
        return await anyio.to_thread.run_sync(self.issue_sync, key, subject)

    async def jwks(self) -> dict[str, list[dict[str, str]]]:
        return jwks_document(await self.keys.published())
