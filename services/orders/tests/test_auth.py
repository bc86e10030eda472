from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import AUDIENCE, ISSUER, KID, VALID_ORDER, User


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _claims(subject: int, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": str(subject),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
        **overrides,
    }


def _hs256_with_public_key(signing_key: rsa.RSAPrivateKey, subject: int) -> str:
    """The algorithm-confusion attack: HMAC-sign with the public key everybody can fetch."""
    secret = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
    payload = _b64(json.dumps(_claims(subject)).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


ENDPOINTS = [
    ("POST", "/orders/", VALID_ORDER),
    ("GET", "/orders/{order_id}/", None),
    ("PATCH", "/orders/{order_id}/", {"status": "PAID"}),
    ("GET", "/orders/user/{user_id}/", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
async def test_every_order_endpoint_needs_a_token(
    client: httpx.AsyncClient, user: User, method: str, path: str, body: Any
) -> None:
    url = path.format(order_id=uuid.uuid4(), user_id=user.id)

    response = await client.request(method, url, json=body)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert "detail" in response.json()


@pytest.mark.parametrize(
    "case",
    [
        "not-a-jwt",
        "basic-scheme",
        "expired",
        "wrong-audience",
        "wrong-issuer",
        "missing-jti",
        "subject-not-a-user-id",
        "hs256-forged-with-public-key",
        "alg-none",
        "signed-by-another-key",
        "unknown-kid",
        "tampered-payload",
    ],
)
async def test_bad_token_returns_401(
    client: httpx.AsyncClient,
    user: User,
    make_token: Callable[..., str],
    signing_key: rsa.RSAPrivateKey,
    case: str,
) -> None:
    now = int(time.time())
    headers = {"Authorization": "Bearer "}
    match case:
        case "not-a-jwt":
            headers["Authorization"] += "not.a.jwt"
        case "basic-scheme":
            headers["Authorization"] = "Basic " + _b64(b"user:password")
        case "expired":
            headers["Authorization"] += make_token(user.id, iat=now - 600, exp=now - 60)
        case "wrong-audience":
            headers["Authorization"] += make_token(user.id, aud="another-platform")
        case "wrong-issuer":
            headers["Authorization"] += make_token(user.id, iss="someone-else")
        case "missing-jti":
            headers["Authorization"] += jwt.encode(
                {k: v for k, v in _claims(user.id).items() if k != "jti"},
                signing_key,
                algorithm="RS256",
                headers={"kid": KID},
            )
        case "subject-not-a-user-id":
            headers["Authorization"] += make_token("alice")
        case "hs256-forged-with-public-key":
            headers["Authorization"] += _hs256_with_public_key(signing_key, user.id)
        case "alg-none":
            headers["Authorization"] += jwt.encode(
                _claims(user.id), None, algorithm="none", headers={"kid": KID}
            )
        case "signed-by-another-key":
            stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            headers["Authorization"] += make_token(user.id, key=stranger)
        case "unknown-kid":
            headers["Authorization"] += make_token(user.id, kid="no-such-key")
        case "tampered-payload":
            header, _, signature = make_token(user.id).split(".")
            payload = _b64(json.dumps(_claims(user.id + 1)).encode())
            headers["Authorization"] += f"{header}.{payload}.{signature}"

    response = await client.get(f"/orders/user/{user.id}/", headers=headers)

    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_valid_token_is_accepted(client: httpx.AsyncClient, user: User) -> None:
    response = await client.get(f"/orders/user/{user.id}/", headers=user.headers)

    assert response.status_code == 200
