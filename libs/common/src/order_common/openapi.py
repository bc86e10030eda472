"""What every service's OpenAPI document says about errors, so they all describe them alike.

Every error body is ``{"detail": ...}``: a sentence for domain errors (``ErrorResponse``), a list
of field problems for invalid input (``ValidationErrorResponse``, FastAPI's own 422 shape). Routes
declare their errors with ``responses(...)``; the statuses a route can answer with are a contract
that tests/test_openapi_contract.py checks against the published documents."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorResponse(BaseModel):
    """Every error except invalid input (422) has this shape."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "order not found"}]})

    detail: str = Field(description="What went wrong, in a sentence meant for a person.")


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(
        description='Where the problem is: ["body", "items", 0, "price"], ["query", "limit"].'
    )
    msg: str = Field(description="What is wrong with the value.")
    type: str = Field(description='A machine-readable kind, e.g. "missing", "value_error".')
    input: Any = Field(default=None, description="The value that was rejected.")
    ctx: dict[str, Any] | None = Field(default=None, description="Details, e.g. the limit.")


class ValidationErrorResponse(BaseModel):
    """Invalid input: one entry per problem, each naming its field."""

    detail: list[ValidationIssue]


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}


@dataclass(frozen=True)
class ErrorDoc:
    """One documented error: its status, when it happens, an example ``detail``."""

    status: int
    description: str
    example: str
    headers: Mapping[str, Any] = field(default_factory=dict)

    def but(self, description: str | None = None, example: str | None = None) -> ErrorDoc:
        """The same error, described for one route."""
        return ErrorDoc(
            self.status, description or self.description, example or self.example, self.headers
        )


UNAUTHORIZED = ErrorDoc(
    401,
    "Missing, malformed, expired or otherwise invalid bearer token.",
    "not authenticated: send Authorization: Bearer <token>",
    headers={
        "WWW-Authenticate": {
            "description": "`Bearer`: the scheme to authenticate with.",
            "schema": {"type": "string"},
        }
    },
)
FORBIDDEN = ErrorDoc(403, "The caller may not do this.", "forbidden")
NOT_FOUND = ErrorDoc(404, "No such resource.", "not found")
CONFLICT = ErrorDoc(409, "The request conflicts with the current state.", "conflict")
BODY_TOO_LARGE = ErrorDoc(
    413,
    "The request body is over 1 MiB. The gateway answers this before the service sees it.",
    "request body too large: the limit is 1 MiB",
)
TOO_MANY_REQUESTS = ErrorDoc(
    429,
    "Rate limit spent. Limits are shared by every replica; wait `Retry-After` seconds.",
    "rate limit exceeded: 10 per 1 minute; retry in 42 s",
    headers=_RETRY_AFTER,
)
UNAVAILABLE = ErrorDoc(
    503,
    "A service this request needs does not answer right now; retry after `Retry-After` seconds.",
    "service temporarily unavailable, retry shortly",
    headers=_RETRY_AFTER,
)

_BY_STATUS = {
    doc.status: doc
    for doc in (
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        CONFLICT,
        BODY_TOO_LARGE,
        TOO_MANY_REQUESTS,
        UNAVAILABLE,
    )
}

VALIDATION_ERROR = 422


def _validation_response(example: Mapping[str, Any] | None) -> dict[str, Any]:
    example = example or {
        "detail": [
            {
                "type": "missing",
                "loc": ["body", "items"],
                "msg": "Field required",
                "input": {},
            }
        ]
    }
    return {
        "model": ValidationErrorResponse,
        "description": "Invalid input: the body, a path parameter or a query parameter. Each "
        "entry of `detail` names the field (`loc`) and the problem (`msg`).",
        "content": {"application/json": {"example": dict(example)}},
    }


def _error_response(doc: ErrorDoc) -> dict[str, Any]:
    response: dict[str, Any] = {
        "model": ErrorResponse,
        "description": doc.description,
        "content": {"application/json": {"example": {"detail": doc.example}}},
    }
    if doc.headers:
        response["headers"] = dict(doc.headers)
    return response


def responses(
    *errors: int | ErrorDoc, validation_example: Mapping[str, Any] | None = None
) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route, in status order: each error as a status (the generic
    wording above) or an ``ErrorDoc`` (worded for the route). 422 documents
    ``ValidationErrorResponse``; declaring it keeps FastAPI from adding its own schema."""
    documented: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        if error == VALIDATION_ERROR:
            documented[VALIDATION_ERROR] = _validation_response(validation_example)
            continue
        doc = error if isinstance(error, ErrorDoc) else _BY_STATUS[error]
        documented[doc.status] = _error_response(doc)
    return dict(sorted(documented.items(), key=lambda item: int(item[0])))
