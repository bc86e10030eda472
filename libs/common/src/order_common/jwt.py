"""JWT verification against the auth service's JWKS.

Keys are cached; an unknown ``kid`` triggers one refresh (throttled, so a flood of forged kids
cannot hammer auth), and keys older than ``max_age`` are fetched again, so a key that auth
stopped publishing stops verifying. The algorithm is pinned to RS256 and ``iss``, ``aud``,
``exp`` are checked.

Verified tokens are remembered (a bounded map keyed by the whole token string), so a client
that sends the same token again is not checked by RSA again: an entry is never used past the
token's ``exp``, the map is emptied whenever the fetched key set differs from the one before (a
rotation, a removed key), and only a token that passed every check is ever stored."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from order_common.errors import DomainError, Unauthorized

logger = logging.getLogger(__name__)

ALGORITHM = "RS256"
REQUIRED_CLAIMS = ["sub", "iss", "aud", "iat", "exp", "jti"]


class KeysUnavailable(DomainError):
    status_code = 503
    headers = {"Retry-After": "5"}


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    jti: str
    expires_at: int
    raw: dict[str, Any]


class JwksVerifier:
    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str,
        http: httpx.AsyncClient,
        min_refresh_interval: float = 10.0,
        max_age: float = 300.0,
        leeway: float = 5.0,
        cache_size: int = 4096,
    ) -> None:
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._http = http
        self._min_refresh_interval = min_refresh_interval
        self._max_age = max_age
        self._leeway = leeway
        self._keys: dict[str, Any] = {}
        self._jwks_fingerprint: frozenset[tuple[str, str]] = frozenset()
        self._last_refresh = float("-inf")
        self._lock = asyncio.Lock()
        self._cache_size = cache_size
        # Insertion-ordered: when full, the oldest entry goes first.
        self._verified: dict[str, TokenClaims] = {}
        # Bumped when the keys change: a token checked with a key of another generation is
        # not remembered (the key may be gone now).
        self._generation = 0

    async def refresh(self) -> None:
        response = await self._http.get(self._jwks_url)
        response.raise_for_status()
        keys: dict[str, Any] = {}
        fingerprint: set[tuple[str, str]] = set()
        for jwk in response.json().get("keys", []):
            if jwk.get("kty") != "RSA" or "kid" not in jwk:
                continue
            if jwk.get("alg", ALGORITHM) != ALGORITHM or jwk.get("use", "sig") != "sig":
                continue
            keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key
            fingerprint.add((jwk["kid"], json.dumps(jwk, sort_keys=True)))
        if frozenset(fingerprint) != self._jwks_fingerprint:
            self._forget_verified()
        self._jwks_fingerprint = frozenset(fingerprint)
        self._keys = keys
        self._last_refresh = time.monotonic()
        logger.info("JWKS refreshed", extra={"kids": sorted(keys)})

    def _forget_verified(self) -> None:
        self._verified.clear()
        self._generation += 1

    @property
    def cached_tokens(self) -> int:
        return len(self._verified)

    async def _key_for(self, kid: str) -> Any:
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            if key is None and time.monotonic() - self._last_refresh >= self._min_refresh_interval:
                try:
                    await self.refresh()
                except (httpx.HTTPError, ValueError) as exc:
                    logger.warning("JWKS fetch failed: %s", exc)
                    if not self._keys:
                        raise KeysUnavailable("token keys are unavailable, retry shortly") from exc
                key = self._keys.get(kid)
        if key is None:
            raise Unauthorized("invalid token: unknown signing key")
        return key

    async def _refresh_stale(self) -> None:
        """Fetch the keys again once ``max_age`` has passed; on failure keep the cached ones
        (auth briefly down must not lock everybody out) and try again after the throttle."""
        async with self._lock:
            if time.monotonic() - self._last_refresh < self._max_age:
                return  # another request refreshed meanwhile
            try:
                await self.refresh()
            except (httpx.HTTPError, ValueError) as exc:
                logger.warning("JWKS refresh failed, keeping the cached keys: %s", exc)
                self._last_refresh = time.monotonic() - self._max_age + self._min_refresh_interval

    def remembered(self, token: str) -> TokenClaims | None:
        """The claims of ``token`` if ``verify`` would answer them from the verified-token cache
        right now, without any I/O: remembered, before its ``exp``, and the keys not due for
        their refresh. None means "ask ``verify``" (it may still accept the token)."""
        cached = self._verified.get(token)
        if (
            cached is None
            or time.time() >= cached.expires_at
            or time.monotonic() - self._last_refresh >= self._max_age
        ):
            return None
        return cached

    async def verify(self, token: str) -> TokenClaims:
        if time.monotonic() - self._last_refresh >= self._max_age and self._keys:
            await self._refresh_stale()  # may change the keys, and so empty the cache
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() < cached.expires_at:
                return cached
            del self._verified[token]
        claims, generation = await self._verify_signature_and_claims(token)
        if (
            self._cache_size > 0
            and generation == self._generation
            and time.time() < claims.expires_at
        ):
            while len(self._verified) >= self._cache_size:
                del self._verified[next(iter(self._verified))]
            self._verified[token] = claims
        return claims

    async def _verify_signature_and_claims(self, token: str) -> tuple[TokenClaims, int]:
        """The claims, and the key generation that verified them."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("invalid token: malformed") from exc
        if header.get("alg") != ALGORITHM:
            raise Unauthorized(f"invalid token: algorithm must be {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("invalid token: no key id")
        key = await self._key_for(kid)
        generation = self._generation
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("invalid token: expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        try:
            user_id = int(claims["sub"])
        except (TypeError, ValueError) as exc:
            raise Unauthorized("invalid token: subject is not a user id") from exc
        verified = TokenClaims(
            user_id=user_id, jti=str(claims["jti"]), expires_at=int(claims["exp"]), raw=claims
        )
        return verified, generation
