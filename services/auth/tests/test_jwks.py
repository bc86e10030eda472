from __future__ import annotations

from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from auth_service.keys import jwk_thumbprint

# RFC 7638, section 3.1: the example RSA key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRX"
    "jBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAt"
    "aSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPk"
    "sINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_jwk_thumbprint_matches_the_rfc_7638_example() -> None:
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}

    assert jwk_thumbprint(jwk) == RFC7638_THUMBPRINT


async def test_jwks_publishes_the_public_half_of_the_signing_key_with_its_thumbprint_kid(
    client: httpx.AsyncClient, private_key_path: Path
) -> None:
    response = await client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    (jwk,) = response.json()["keys"]
    assert set(jwk) == {"kty", "n", "e", "kid", "alg", "use"}
    assert (jwk["kty"], jwk["alg"], jwk["use"]) == ("RSA", "RS256", "sig")
    assert jwk["kid"] == jwk_thumbprint(jwk)

    private_key = serialization.load_pem_private_key(private_key_path.read_bytes(), None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    published = jwt.PyJWK(jwk).key
    assert isinstance(published, rsa.RSAPublicKey)
    assert published.public_numbers() == private_key.public_key().public_numbers()
    assert "d" not in jwk  # no private member leaks
