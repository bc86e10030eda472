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

from orders_service.main import create_app

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


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: str = "") -> str:
    encoded = [_b64(json.dumps(part).encode()) for part in (header, claims)]
    return ".".join([*encoded, signature])


def _hs256(secret: bytes, claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
    payload = _b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def _public_key_forms(signing_key: rsa.RSAPrivateKey) -> dict[str, bytes]:
    public = signing_key.public_key()
    spki_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "spki-pem": spki_pem,
        "spki-pem-no-newline": spki_pem.rstrip(b"\n"),
        "pkcs1-pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        ),
        "spki-der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "openssh": public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        ),
    }


# The forgeries an attacker tries (cf. the JWT attacks catalogue): each must be a 401.
FORGERIES = [
    *[f"alg-{alg}" for alg in ("none", "None", "NONE", "nOnE")],
    *[f"alg-{alg}-keeping-the-signature" for alg in ("none", "NONE")],
    *[f"hs256-with-public-key-{form}" for form in ("spki-pem", "spki-pem-no-newline")],
    *[f"hs256-with-public-key-{form}" for form in ("pkcs1-pem", "spki-der", "openssh")],
    "rs512-with-the-real-key",
    "another-key-under-the-real-kid",
    "unknown-kid",
    "no-kid",
    "other-issuer",
    "other-audience",
    "expired",
    "not-yet-valid",
    "tampered-subject",
    "tampered-expiry",
    "tampered-audience",
    "signature-stripped",
]


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_forged_token_returns_401(
    client: httpx.AsyncClient,
    user: User,
    make_token: Callable[..., str],
    signing_key: rsa.RSAPrivateKey,
    forgery: str,
) -> None:
    now = int(time.time())
    claims = _claims(user.id)
    real = make_token(user.id)
    header, payload, signature = real.split(".")
    if forgery.startswith("alg-"):
        alg = forgery.split("-")[1]
        kept = signature if forgery.endswith("keeping-the-signature") else ""
        token = _unsigned({"alg": alg, "typ": "JWT", "kid": KID}, claims, kept)
    elif forgery.startswith("hs256-with-public-key-"):
        form = forgery.removeprefix("hs256-with-public-key-")
        token = _hs256(_public_key_forms(signing_key)[form], claims)
    else:
        match forgery:
            case "rs512-with-the-real-key":
                token = jwt.encode(claims, signing_key, algorithm="RS512", headers={"kid": KID})
            case "another-key-under-the-real-kid":
                stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                token = make_token(user.id, key=stranger)
            case "unknown-kid":
                token = make_token(user.id, kid="no-such-key")
            case "no-kid":
                token = jwt.encode(claims, signing_key, algorithm="RS256")
            case "other-issuer":
                token = make_token(user.id, iss="someone-else")
            case "other-audience":
                token = make_token(user.id, aud="another-platform")
            case "expired":
                token = make_token(user.id, iat=now - 600, exp=now - 60)
            case "not-yet-valid":
                token = make_token(user.id, nbf=now + 600)
            case "tampered-subject" | "tampered-expiry" | "tampered-audience":
                changed = {
                    "tampered-subject": {"sub": str(user.id + 1)},
                    "tampered-expiry": {"exp": now + 86_400 * 365},
                    "tampered-audience": {"aud": "another-platform"},
                }[forgery]
                original = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
                token = f"{header}.{_b64(json.dumps({**original, **changed}).encode())}.{signature}"
            case "signature-stripped":
                token = f"{header}.{payload}."
            case _:
                raise AssertionError(forgery)

    # The real token is verified and remembered first: a forgery made from it (same header,
    # same claims) must still be checked, never answered from the cache of verified tokens.
    url = f"/orders/user/{user.id}/"
    genuine = await client.get(url, headers={"Authorization": f"Bearer {real}"})
    response = await client.get(url, headers={"Authorization": f"Bearer {token}"})

    assert genuine.status_code == 200, genuine.text
    assert response.status_code == 401, (forgery, response.text)
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_thirty_unknown_kids_fetch_the_keys_once_and_the_real_key_still_works(
    make_settings: Callable[..., Any],
    jwks: dict[str, Any],
    new_user: Callable[[], User],
    make_token: Callable[..., str],
) -> None:
    user = new_user()
    fetches = 0

    def serve(request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        fetches += 1
        return httpx.Response(200, json=jwks)

    async with httpx.AsyncClient(transport=httpx.MockTransport(serve)) as jwks_http:
        app = create_app(make_settings(), http_client=jwks_http)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://orders.test"
            ) as client,
        ):

            async def status(token: str) -> int:
                url = f"/orders/user/{user.id}/"
                headers = {"Authorization": f"Bearer {token}"}
                return (await client.get(url, headers=headers)).status_code

            forged = [await status(make_token(user.id, kid=f"forged-{i}")) for i in range(30)]
            real = await status(user.token)

    assert forged == [401] * 30
    assert real == 200
    assert fetches == 1  # one fetch served the real kid; the forged ones hit the throttle


async def test_valid_token_is_accepted(client: httpx.AsyncClient, user: User) -> None:
    response = await client.get(f"/orders/user/{user.id}/", headers=user.headers)

    assert response.status_code == 200
