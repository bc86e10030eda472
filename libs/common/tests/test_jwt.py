from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from order_common.errors import Unauthorized
from order_common.jwt import JwksVerifier, KeysUnavailable

ISS, AUD = "test-issuer", "test-audience"
JWKS_URL = "http://auth.test/.well-known/jwks.json"


class KeyServer:
    """Stands in for the auth service's JWKS endpoint and counts how often it is asked."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.requests = 0
        self.up = True

    def add_key(self, kid: str) -> rsa.RSAPrivateKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.keys[kid] = key
        return key

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if not self.up:
            return httpx.Response(503)
        jwks = []
        for kid, key in self.keys.items():
            jwk: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            jwks.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return httpx.Response(200, json={"keys": jwks})


def token(key: Any, kid: str, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"sub": "42", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 60, "jti": "j1"}
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def server() -> KeyServer:
    return KeyServer()


@pytest.fixture
async def verifier(server: KeyServer) -> Any:
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        yield JwksVerifier(
            JWKS_URL, issuer=ISS, audience=AUD, http=http, min_refresh_interval=0, leeway=0
        )


async def test_a_valid_token_yields_the_user_id(server: KeyServer, verifier: JwksVerifier) -> None:
    key = server.add_key("k1")
    claims = await verifier.verify(token(key, "k1"))
    assert claims.user_id == 42
    assert claims.jti == "j1"


async def test_keys_are_cached(server: KeyServer, verifier: JwksVerifier) -> None:
    key = server.add_key("k1")
    for _ in range(3):
        await verifier.verify(token(key, "k1"))
    assert server.requests == 1


async def test_an_unknown_kid_refreshes_the_keys_once(
    server: KeyServer, verifier: JwksVerifier
) -> None:
    await verifier.verify(token(server.add_key("k1"), "k1"))
    rotated = server.add_key("k2")
    assert (await verifier.verify(token(rotated, "k2"))).user_id == 42
    assert server.requests == 2


async def test_unknown_kid_refreshes_are_throttled(server: KeyServer) -> None:
    key = server.add_key("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = JwksVerifier(JWKS_URL, issuer=ISS, audience=AUD, http=http)
        await verifier.verify(token(key, "k1"))
        for _ in range(5):
            with pytest.raises(Unauthorized, match="unknown signing key"):
                await verifier.verify(token(key, "forged-kid"))
    assert server.requests == 1


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 10}, "expired"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "someone-else"}, "issuer"),
        ({"jti": None}, "jti"),
        ({"sub": "not-a-number"}, "subject"),
    ],
)
async def test_bad_claims_are_rejected(
    server: KeyServer, verifier: JwksVerifier, overrides: dict[str, Any], reason: str
) -> None:
    key = server.add_key("k1")
    with pytest.raises(Unauthorized, match=f"(?i){reason}"):
        await verifier.verify(token(key, "k1", **overrides))


async def test_the_algorithm_is_pinned(server: KeyServer, verifier: JwksVerifier) -> None:
    server.add_key("k1")
    forged = jwt.encode(
        {"sub": "42", "iss": ISS, "aud": AUD, "iat": 0, "exp": 2**31, "jti": "x"},
        "a-shared-secret-guessed-by-an-attacker",
        algorithm="HS256",
        headers={"kid": "k1"},
    )
    with pytest.raises(Unauthorized, match="RS256"):
        await verifier.verify(forged)


async def test_a_token_signed_by_another_key_is_rejected(
    server: KeyServer, verifier: JwksVerifier
) -> None:
    server.add_key("k1")
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(Unauthorized, match="Signature"):
        await verifier.verify(token(stranger, "k1"))


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c"])
async def test_garbage_is_rejected(verifier: JwksVerifier, garbage: str) -> None:
    with pytest.raises(Unauthorized):
        await verifier.verify(garbage)


async def test_keys_unavailable_is_a_503_not_a_401(
    server: KeyServer, verifier: JwksVerifier
) -> None:
    key = server.add_key("k1")
    server.up = False
    with pytest.raises(KeysUnavailable) as raised:
        await verifier.verify(token(key, "k1"))
    assert raised.value.status_code == 503


async def test_keys_past_their_max_age_are_fetched_again_so_a_removed_key_stops_verifying(
    server: KeyServer,
) -> None:
    old, new = server.add_key("old"), server.add_key("new")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = JwksVerifier(
            JWKS_URL, issuer=ISS, audience=AUD, http=http, max_age=0.2, leeway=0
        )
        assert (await verifier.verify(token(old, "old"))).user_id == 42
        del server.keys["old"]  # auth removed the key
        assert (await verifier.verify(token(old, "old"))).user_id == 42  # still cached
        await asyncio.sleep(0.25)

        with pytest.raises(Unauthorized, match="unknown signing key"):
            await verifier.verify(token(old, "old"))
        assert (await verifier.verify(token(new, "new"))).user_id == 42
    assert server.requests == 2


async def test_a_failed_refresh_of_stale_keys_keeps_the_cached_ones(server: KeyServer) -> None:
    key = server.add_key("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = JwksVerifier(
            JWKS_URL, issuer=ISS, audience=AUD, http=http, max_age=0.1, min_refresh_interval=5
        )
        await verifier.verify(token(key, "k1"))
        server.up = False
        await asyncio.sleep(0.15)

        claims = [await verifier.verify(token(key, "k1")) for _ in range(3)]

    assert [c.user_id for c in claims] == [42, 42, 42]
    assert server.requests == 2  # one failed refresh, then the throttle
