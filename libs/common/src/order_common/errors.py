"""Errors that carry their own HTTP status and nothing else. Use cases raise them knowing
nothing of the web framework; ``order_common.http_errors`` turns them into ``{"detail": ...}``
responses."""

from __future__ import annotations

# The gateway's own 503 (an upstream that does not answer) says the same.
RETRY_AFTER_SECONDS = 5


class DomainError(Exception):
    status_code: int = 400
    headers: dict[str, str] | None = None

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if headers is not None:
            self.headers = headers


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    status_code = 409


class Forbidden(DomainError):
    status_code = 403


class Unauthorized(DomainError):
    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class TooManyRequests(DomainError):
    status_code = 429


class InvalidInput(DomainError):
    """422 in the shape of a validation error (``detail`` is a list naming ``loc``), for input
    that only the use case can judge, e.g. an Idempotency-Key reused with another body."""

    status_code = 422

    def __init__(self, loc: tuple[str, ...], msg: str, error_type: str) -> None:
        super().__init__(msg)
        self.errors = [{"type": error_type, "loc": list(loc), "msg": msg}]


class ServiceUnavailable(DomainError):
    status_code = 503
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
