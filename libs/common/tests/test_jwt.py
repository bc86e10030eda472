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


# --- the cache of verified tokens -------------------------------------------------------------


async def test_a_repeated_token_is_remembered_and_the_cache_is_bounded(server: KeyServer) -> None:
    key = server.add_key("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = JwksVerifier(JWKS_URL, issuer=ISS, audience=AUD, http=http, cache_size=2)
        first = token(key, "k1", jti="a")
        assert await verifier.verify(first) is await verifier.verify(first)
        assert verifier.cached_tokens == 1
        for jti in ("b", "c", "d"):
            await verifier.verify(token(key, "k1", jti=jti))
        assert verifier.cached_tokens == 2


async def test_a_remembered_token_is_not_accepted_past_its_exp(server: KeyServer) -> None:
    key = server.add_key("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = JwksVerifier(JWKS_URL, issuer=ISS, audience=AUD, http=http, leeway=0)
        short_lived = token(key, "k1", exp=int(time.time()) + 1)
        assert (await verifier.verify(short_lived)).user_id == 42
        assert verifier.cached_tokens == 1
        await asyncio.sleep(max(0.0, (time.time() // 1 + 1) - time.time()) + 0.05)

        with pytest.raises(Unauthorized, match="expired"):
            await verifier.verify(short_lived)
        assert verifier.cached_tokens == 0


async def test_a_key_rotation_empties_the_cache_so_a_withdrawn_key_stops_at_once(
    server: KeyServer,
) -> None:
    old = server.add_key("old")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        # max_age is long: only the rotation (a new kid seen) fetches the keys again.
        verifier = JwksVerifier(
            JWKS_URL, issuer=ISS, audience=AUD, http=http, max_age=3600, min_refresh_interval=0
        )
        remembered = token(old, "old")
        await verifier.verify(remembered)
        assert verifier.cached_tokens == 1
        del server.keys["old"]  # auth rotated: the old key is withdrawn
        new = server.add_key("new")

        assert (await verifier.verify(token(new, "new", jti="n"))).user_id == 42
        with pytest.raises(Unauthorized, match="unknown signing key"):
            await verifier.verify(remembered)
    assert server.requests == 3  # first fetch, the new kid's, the withdrawn kid's retry


async def test_a_refresh_that_changes_nothing_keeps_the_cache(server: KeyServer) -> None:
    key = server.add_key("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = JwksVerifier(
            JWKS_URL, issuer=ISS, audience=AUD, http=http, max_age=0.1, min_refresh_interval=0
        )
        await verifier.verify(token(key, "k1"))
        await asyncio.sleep(0.15)
        await verifier.verify(token(key, "k1", jti="other"))  # max_age passed: fetched again
        assert server.requests == 2
        assert verifier.cached_tokens == 2


async def test_a_bad_signature_is_never_remembered(server: KeyServer) -> None:
    key = server.add_key("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = JwksVerifier(JWKS_URL, issuer=ISS, audience=AUD, http=http)
        valid = token(key, "k1")
        await verifier.verify(valid)
        header, payload, signature = valid.split(".")
        forged = f"{header}.{payload}.{signature[:-4]}AAAA"
        for _ in range(2):
            with pytest.raises(Unauthorized):
                await verifier.verify(forged)
        assert verifier.cached_tokens == 1


# --- remembered: what a fast path may answer from without calling verify ---------------------


async def test_remembered_knows_only_tokens_verify_accepted_and_stops_at_their_exp(
    server: KeyServer,
) -> None:
    key = server.add_key("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = JwksVerifier(JWKS_URL, issuer=ISS, audience=AUD, http=http, leeway=0)
        short_lived = token(key, "k1", exp=int(time.time()) + 1)
        assert verifier.remembered(short_lived) is None  # never verified
        claims = await verifier.verify(short_lived)
        assert verifier.remembered(short_lived) is claims
        await asyncio.sleep(max(0.0, (time.time() // 1 + 1) - time.time()) + 0.05)

        assert verifier.remembered(short_lived) is None
        assert verifier.cached_tokens == 1  # still there: only verify() drops it


async def test_remembered_defers_to_verify_once_the_keys_are_due_for_a_refresh(
    server: KeyServer,
) -> None:
    key = server.add_key("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as http:
        verifier = JwksVerifier(
            JWKS_URL, issuer=ISS, audience=AUD, http=http, max_age=0.2, min_refresh_interval=0
        )
        remembered = token(key, "k1")
        await verifier.verify(remembered)
        assert verifier.remembered(remembered) is not None
        del server.keys["k1"]  # withdrawn: only a refresh can tell
        await asyncio.sleep(0.25)

        assert verifier.remembered(remembered) is None
        with pytest.raises(Unauthorized, match="unknown signing key"):
            await verifier.verify(remembered)
        assert verifier.remembered(remembered) is None
