"""Use cases of the auth service. Plain arguments in, domain errors out; no web framework."""

from __future__ import annotations

import logging

import anyio

from auth_service.errors import EmailAlreadyRegistered, InvalidCredentials
from auth_service.keys import IssuedToken, TokenIssuer
from auth_service.login_guard import LoginGuard
from auth_service.metrics import LOGINS, REGISTRATIONS
from auth_service.models import EMAIL_MAX_LENGTH, User
from auth_service.repository import AuthUnitOfWork, EmailTaken
from auth_service.security import PasswordHasher
from order_common.db import retry_on_disconnect

logger = logging.getLogger(__name__)


def normalize_email(email: str) -> str:
    return email.strip().lower()


@retry_on_disconnect
async def register(
    uow: AuthUnitOfWork, hasher: PasswordHasher, *, email: str, password: str
) -> User:
    email = normalize_email(email)
    # The pre-check spares an argon2 hash for the common duplicate; the unique constraint
    # still decides when two registrations race.
    async with uow:
        if await uow.users.get_by_email(email) is not None:
            REGISTRATIONS.labels("conflict").inc()
            raise EmailAlreadyRegistered()
    # Hash outside the transaction: no pooled connection is held during the slow part.
    password_hash = await hasher.hash(password)
    async with uow:
        try:
            user = await uow.users.add(email, password_hash)
        except EmailTaken as exc:
            REGISTRATIONS.labels("conflict").inc()
            raise EmailAlreadyRegistered() from exc
        await uow.commit()
    REGISTRATIONS.labels("created").inc()
    logger.info("user registered", extra={"user_id": user.id})
    return user


@retry_on_disconnect
async def issue_token(
    uow: AuthUnitOfWork,
    hasher: PasswordHasher,
    issuer: TokenIssuer,
    guard: LoginGuard,
    *,
    username: str,
    password: str,
    client_ip: str,
) -> IssuedToken:
    email = normalize_email(username)
    # Before any lookup or hash: a refused attempt costs no argon2 work and checks nothing.
    await guard.admit(email, client_ip)
    user_id: int | None = None
    stored_hash: str | None = None
    try:
        if len(email) <= EMAIL_MAX_LENGTH:
            async with uow:
                user = await uow.users.get_by_email(email)
                if user is not None:
                    # Read inside the block: leaving it rolls back, which expires loaded objects.
                    user_id, stored_hash = user.id, user.password_hash
        # An unknown user is verified against a dummy hash: both failures cost the same.
        valid, new_hash = await hasher.verify(password, stored_hash)
    except BaseException:
        # No verdict (the database failed, the request was cancelled): the attempt counts for
        # nothing, and ending it must not be cut short by the same cancellation.
        with anyio.CancelScope(shield=True):
            await guard.abandoned(email, client_ip)
        raise
    if user_id is None or not valid:
        await guard.failed(email, client_ip)
        LOGINS.labels("failure").inc()
        raise InvalidCredentials()
    await guard.succeeded(email, client_ip)
    if new_hash is not None:
        async with uow:
            await uow.users.set_password_hash(user_id, new_hash)
            await uow.commit()
        logger.info("password hash upgraded", extra={"user_id": user_id})
    token = await issuer.issue(str(user_id))
    LOGINS.labels("success").inc()
    logger.info("token issued", extra={"user_id": user_id})
    return token
