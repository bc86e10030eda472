"""Dependencies the routes declare, as ``Annotated`` aliases. Everything comes from app state,
which the lifespan fills."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from limits import RateLimitItem

from auth_service.keys import TokenIssuer
from auth_service.login_guard import LoginGuard
from auth_service.repository import AuthUnitOfWork
from auth_service.security import PasswordHasher
from auth_service.settings import Settings
from order_common.ratelimit import RateLimiter, parse_limit


@dataclass(frozen=True)
class RateLimits:
    token_ip: RateLimitItem
    register_ip: RateLimitItem

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        return cls(
            token_ip=parse_limit(settings.rate_limit_token_ip),
            register_ip=parse_limit(settings.rate_limit_register),
        )


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_uow(request: Request) -> AuthUnitOfWork:
    return AuthUnitOfWork(request.app.state.session_factory)


async def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.password_hasher
    return hasher


async def get_token_issuer(request: Request) -> TokenIssuer:
    issuer: TokenIssuer = request.app.state.token_issuer
    return issuer


async def get_login_guard(request: Request) -> LoginGuard:
    guard: LoginGuard = request.app.state.login_guard
    return guard


async def get_rate_limiter(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


async def get_rate_limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.rate_limits
    return limits


async def client_ip(request: Request) -> str:
    # uvicorn sets the client from X-Forwarded-For only when the peer is a trusted proxy
    # (AUTH_FORWARDED_ALLOW_IPS), so a client cannot pick its own address.
    return request.client.host if request.client else "unknown"


SettingsDep = Annotated[Settings, Depends(get_settings)]
UowDep = Annotated[AuthUnitOfWork, Depends(get_uow)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
TokenIssuerDep = Annotated[TokenIssuer, Depends(get_token_issuer)]
LoginGuardDep = Annotated[LoginGuard, Depends(get_login_guard)]
RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]
RateLimitsDep = Annotated[RateLimits, Depends(get_rate_limits)]
ClientIpDep = Annotated[str, Depends(client_ip)]


async def limit_token_by_ip(
    limiter: RateLimiterDep, limits: RateLimitsDep, ip: ClientIpDep
) -> None:
    await limiter.hit(limits.token_ip, "token-ip", ip)


TokenFormDep = Annotated[OAuth2PasswordRequestForm, Depends()]


async def limit_register_by_ip(
    limiter: RateLimiterDep, limits: RateLimitsDep, ip: ClientIpDep
) -> None:
    await limiter.hit(limits.register_ip, "register-ip", ip)
