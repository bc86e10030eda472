from __future__ import annotations

from fastapi import Depends, Response, status

from auth_service import service
from auth_service.deps import (
    ClientIpDep,
    HasherDep,
    LoginGuardDep,
    TokenFormDep,
    TokenIssuerDep,
    UowDep,
    limit_register_by_ip,
    limit_token_by_ip,
)
from auth_service.schemas import JwkSet, TokenResponse, UserCreate, UserRead
from order_common.http import SlashAgnosticRouter
from order_common.openapi import (
    BODY_TOO_LARGE,
    CONFLICT,
    TOO_MANY_REQUESTS,
    UNAUTHORIZED,
    VALIDATION_ERROR,
    responses,
)

TAGS = [
    {
        "name": "auth",
        "description": "Accounts and access tokens: register once, then trade your email and "
        "password for a bearer token (OAuth2 password flow) that every `/orders` request needs.",
    }
]

router = SlashAgnosticRouter(tags=["auth"])


@router.post(
    "/register/",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    dependencies=[Depends(limit_register_by_ip)],
    operation_id="register",
    summary="Register a user",
    description="Creates an account. The email is the login name and is unique regardless of "
    "case; the password is stored only as an argon2id hash. The answer carries your user id, "
    "the `user_id` of your orders (`GET /orders/user/{user_id}/`).\n\n"
    "Limited per client IP (20 a minute by default).",
    response_description="The new user.",
    responses=responses(
        CONFLICT.but(
            "The email is already registered (compared case-insensitively).",
            "a user with this email is already registered",
        ),
        BODY_TOO_LARGE,
        VALIDATION_ERROR,
        TOO_MANY_REQUESTS.but(
            example="rate limit exceeded: 20 per 1 minute; retry in 42 s",
        ),
        validation_example={
            "detail": [
                {
                    "type": "string_too_short",
                    "loc": ["body", "password"],
                    "msg": "String should have at least 6 characters",
                    "input": "abc",
                    "ctx": {"min_length": 6},
                }
            ]
        },
    ),
)
async def register(body: UserCreate, uow: UowDep, hasher: HasherDep) -> UserRead:
    user = await service.register(uow, hasher, email=body.email, password=body.password)
    return UserRead.model_validate(user)


@router.post(
    "/token/",
    response_model=TokenResponse,
    # A generous request ceiling per IP that counts even malformed requests; the login guard
    # in the use case counts failed logins.
    dependencies=[Depends(limit_token_by_ip)],
    operation_id="token",
    summary="Log in: get a bearer token (OAuth2 password flow)",
    description="Send the form fields `username` (your email) and `password` as "
    "`application/x-www-form-urlencoded`, as OAuth2's password grant does. The answer's "
    "`access_token` goes into `Authorization: Bearer <token>` on every `/orders` request until "
    "it expires (`expires_in` seconds). On the gateway's `/docs` page, **Authorize** does this "
    "for you.\n\n"
    "Failed logins are counted (successful ones never are): after 5 consecutive failures for "
    "one account from one IP that pair waits (429 with `Retry-After`, 30 s at first, doubling "
    "up to 15 minutes; a successful login resets it); one IP is refused after 100 failures "
    "across accounts in 15 minutes; and past 50 failures of one account from anywhere, only "
    "the IPs that failed for it are refused, so the owner elsewhere still gets in. Defaults; "
    "see `AUTH_LOGIN_GUARD_*`.",
    response_description="A signed access token. The answer is never cached (`no-store`).",
    responses=responses(
        UNAUTHORIZED.but(
            "Unknown email or wrong password; the answer does not say which.",
            "incorrect username or password",
        ),
        BODY_TOO_LARGE,
        VALIDATION_ERROR,
        TOO_MANY_REQUESTS.but(
            "Too many failed logins for this account from this IP, from this IP, or for this "
            "account; `Retry-After` says when to try again.",
            "too many failed logins; retry in 30 s",
        ),
        validation_example={
            "detail": [{"type": "missing", "loc": ["body", "password"], "msg": "Field required"}]
        },
    ),
)
async def token(
    form: TokenFormDep,
    uow: UowDep,
    hasher: HasherDep,
    issuer: TokenIssuerDep,
    guard: LoginGuardDep,
    ip: ClientIpDep,
    response: Response,
) -> TokenResponse:
    issued = await service.issue_token(
        uow,
        hasher,
        issuer,
        guard,
        username=form.username,
        password=form.password,
        client_ip=ip,
    )
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 §5.1
    return TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)


@router.get(
    "/.well-known/jwks.json",
    response_model=JwkSet,
    operation_id="jwks",
    summary="The public keys that verify access tokens (JWKS)",
    description="RFC 7517 key set. A token's `kid` header names the key that signed it; "
    "verifiers cache this document (it may be cached for 5 minutes) and fetch it again when "
    "they meet an unknown `kid`, which is how keys rotate without downtime.",
    response_description="Every key that may still verify a live token: the one that signs "
    "now, a new one about to, and old ones until their last token has expired.",
)
async def jwks(issuer: TokenIssuerDep, response: Response) -> JwkSet:
    # Verifiers cache keys and refetch on an unknown kid, so a short public cache is safe.
    response.headers["Cache-Control"] = "public, max-age=300"
    return JwkSet.model_validate(await issuer.jwks())
