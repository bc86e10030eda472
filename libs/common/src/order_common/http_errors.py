"""From exceptions to answers: the handlers ``install_error_handlers`` puts on an app, turning
``order_common.errors``' domain errors into ``{"detail": ...}`` responses.

Two kinds of failure are not the request's fault and get their own answer:
- a dependency that cannot be reached (PostgreSQL refused or timed out, the connection dropped,
  Redis down where it is not optional) is a **503 with ``Retry-After``** naming it, never a 500;
- anything else unexpected is a 500 whose traceback goes to the log only.
Both are answered by a middleware inside Starlette's ``ServerErrorMiddleware``, which would
re-raise after answering: uvicorn then closes the connection, and the gateway's next request
on that kept-alive upstream connection fails ("connection reset by peer")."""

from __future__ import annotations

import logging
import math
import re
import types
from collections.abc import Iterable, Mapping
from typing import Any

import asyncpg
import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from order_common.errors import RETRY_AFTER_SECONDS, DomainError, InvalidInput

logger = logging.getLogger(__name__)


# SQLSTATE classes that mean the server cannot serve us now, whatever the statement: 08
# connection exception, 53 insufficient resources (too many connections), 57 operator
# intervention (shutting down, starting up: "the database system is starting up").
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57")


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _raised_in(exc: BaseException, *packages: str) -> bool:
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.split(".")[0] in packages:
            return True
        tb = tb.tb_next
    return False


def unavailable_dependency(exc: BaseException) -> str | None:
    """``"database"`` or ``"redis"`` when ``exc`` means that dependency cannot be reached (so
    the request may succeed later), else ``None``."""
    for error in _chain(exc):
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return "database"
        if isinstance(error, sqlalchemy.exc.TimeoutError):  # no pooled connection came free
            return "database"
        if isinstance(error, asyncpg.PostgresError) and str(
            getattr(error, "sqlstate", "") or ""
        ).startswith(_UNAVAILABLE_SQLSTATE_CLASSES):
            return "database"
        if isinstance(error, asyncpg.InterfaceError | asyncpg.InternalClientError) and (
            "connection" in str(error).lower()
        ):
            return "database"
        if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return "redis"
        # A refused or timed-out connect comes out of the driver unwrapped: the frames say
        # whose it was.
        if isinstance(error, OSError | TimeoutError):
            if _raised_in(error, "asyncpg", "sqlalchemy"):
                return "database"
            if _raised_in(error, "redis"):
                return "redis"
    return None


def _unavailable_response(request: Request, exc: BaseException, dependency: str) -> JSONResponse:
    logger.warning(
        "%s unavailable on %s %s: %s: %s",
        dependency,
        request.method,
        request.url.path,
        type(exc).__name__,
        exc,
    )
    detail = f"the {dependency} is unavailable; retry in a few seconds"
    return JSONResponse(
        {"detail": detail},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


# A field whose name says it holds a secret: its rejected value is never echoed back.
_SECRET_FIELD = re.compile(r"pass(word|wd|phrase)?|secret|token|api[_-]?key|credential", re.I)
# SQLSTATEs of text PostgreSQL cannot store: a NUL byte, a character outside the encoding.
_UNSTORABLE_TEXT = {"22P05", "22021"}
UNSTORABLE_TEXT_DETAIL = (
    "text must be valid UTF-8 without NUL characters (\\u0000) or unpaired surrogates"
)


def _json_safe(value: Any) -> Any:
    """What a 422 may echo: JSON's own values; NaN and infinities (which JSON cannot carry)
    and anything else as their text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _names_a_secret(loc: Iterable[Any]) -> bool:
    return any(isinstance(part, str) and _SECRET_FIELD.search(part) for part in loc)


def validation_errors(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """FastAPI's 422 items, made safe to send: never a secret's value, always valid JSON."""
    safe = []
    for error in errors:
        item = {key: _json_safe(value) for key, value in error.items() if key != "url"}
        loc = error.get("loc", ())
        whole_raw_body = tuple(loc) == ("body",) and not isinstance(item.get("input"), Mapping)
        if _names_a_secret(loc) or whole_raw_body:  # a raw body may hold a password too
            item.pop("input", None)
        elif isinstance(item.get("input"), Mapping) and any(
            _SECRET_FIELD.search(str(key)) for key in item["input"]
        ):
            item["input"] = {
                key: "**********" if _SECRET_FIELD.search(key) else value
                for key, value in item["input"].items()
            }
        safe.append(item)
    return safe


async def _validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": validation_errors(exc.errors())}, status_code=422)


# FastAPI's answer when a JSON body cannot even be decoded (invalid UTF-8): a bare 400 that no
# schema documents. It is a malformed body like any other: 422 json_invalid, as for bad JSON.
_FASTAPI_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _FASTAPI_UNPARSABLE_BODY:
        error = {
            "type": "json_invalid",
            "loc": ["body"],
            "msg": "the body is not valid UTF-8 JSON",
        }
        return JSONResponse({"detail": [error]}, status_code=422)
    return await http_exception_handler(request, exc)


def _is_unstorable_text(exc: BaseException) -> bool:
    """A NUL byte or a lone surrogate that slipped past the schemas, met by the database
    driver or the encoder: the client's input, so a 422, not a 500."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UnicodeError):
            return True
        if getattr(current, "sqlstate", None) in _UNSTORABLE_TEXT:
            return True
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return False


async def _domain_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    detail = exc.errors if isinstance(exc, InvalidInput) else exc.detail
    return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


async def _input_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Handled here, not by the catch-all, so that the answer is an ordinary one: the server
    keeps the connection open for the client's next request."""
    if _is_unstorable_text(exc):
        return JSONResponse({"detail": UNSTORABLE_TEXT_DETAIL}, status_code=422)
    raise exc


def error_response(request: Request, exc: BaseException) -> JSONResponse:
    """The answer to an exception no handler took: 503 for an unreachable dependency, else
    500. The traceback goes to the log, never to the client."""
    dependency = unavailable_dependency(exc)
    if dependency is not None:
        return _unavailable_response(request, exc, dependency)
    logger.error(
        "unhandled error on %s %s",
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return JSONResponse({"detail": "internal server error"}, status_code=500)


async def _unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    return error_response(request, exc)


class ErrorResponseMiddleware:
    """Answers an exception that escaped the routes and handlers, and does not re-raise it, so
    the connection stays open for the next request. An exception after the response started
    is re-raised: only closing the connection tells the client the body is cut short."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:
                raise
            span = trace.get_current_span()
            span.record_exception(exc)
            await error_response(Request(scope), exc)(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Call before ``install_middleware``: the error middleware must be the innermost one, so
    request ids, CORS headers and metrics apply to its answers too."""
    app.add_exception_handler(DomainError, _domain_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(HTTPException, _http_error_handler)
    app.add_exception_handler(UnicodeError, _input_error_handler)
    # A DBAPIError that is not the client's text re-raises into ErrorResponseMiddleware: 503
    # when the database is unreachable, else 500.
    app.add_exception_handler(DBAPIError, _input_error_handler)
    app.add_middleware(ErrorResponseMiddleware)
    # The last resort, for an error in a middleware outside the one above.
    app.add_exception_handler(Exception, _unhandled_error_handler)
