"""Telling a dependency outage from a failure of the work itself.

A handler that fails because Redis, PostgreSQL or RabbitMQ cannot be reached has nothing wrong
with its message: it should wait for the dependency and run again, not spend the message's
attempts and dead-letter it (see ``order_common.subscriber``). ``is_dependency_outage`` looks
through an exception and its causes (SQLAlchemy's ``orig``, ``__cause__``, ``__context__``)
for the marks of one."""

from __future__ import annotations

# SQLSTATEs of a server that is not there to talk to: class 08 (connection exception), and
# admin/crash shutdown, "cannot connect now" (starting up or recovering), too many clients.
_OUTAGE_SQLSTATE_PREFIXES = ("08",)
_OUTAGE_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}


class DependencyUnavailable(Exception):
    """Raise from a handler when a dependency it needs cannot be reached, whatever the
    underlying error; the subscriber waits and runs the handler again."""


def _marks_an_outage(exc: BaseException) -> bool:
    if isinstance(exc, DependencyUnavailable | OSError):  # refused, reset, timed out, DNS
        return True
    module = type(exc).__module__
    name = type(exc).__name__
    if module.startswith("redis") and name in {
        "ConnectionError",
        "TimeoutError",
        "BusyLoadingError",
    }:
        return True
    if getattr(exc, "connection_invalidated", False):  # SQLAlchemy: the connection was lost
        return True
    if module.startswith("asyncpg") and name in {"ConnectionDoesNotExistError", "InterfaceError"}:
        return True
    sqlstate = getattr(exc, "sqlstate", None)
    return isinstance(sqlstate, str) and (
        sqlstate.startswith(_OUTAGE_SQLSTATE_PREFIXES) or sqlstate in _OUTAGE_SQLSTATES
    )


def is_dependency_outage(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says a dependency could not be reached."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if _marks_an_outage(current):
            return True
        for linked in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(linked, BaseException):
                pending.append(linked)
    return False
