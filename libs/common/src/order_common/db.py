"""SQLAlchemy plumbing: naming conventions, engine construction, the unit-of-work base."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Concatenate, ParamSpec, Self, TypeVar

import sqlalchemy.ext.asyncio
from sqlalchemy import MetaData
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from order_common.metrics import DB_RECONNECTS, watch_pool

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Query parameters of a SQLAlchemy asyncpg URL that belong to the dialect, not to libpq:
# asyncpg would send each to the server as a run-time setting, and the connection would fail
# ("unrecognized configuration parameter").
_DIALECT_ONLY_QUERY = frozenset(
    {"prepared_statement_cache_size", "prepared_statement_name_func", "async_fallback"}
)
# SQLAlchemy's asyncpg dialect spells libpq's `sslmode` as `ssl` (its connect argument).
_SSL_AS_SSLMODE = {"true": "require", "false": "disable"}


def asyncpg_dsn(database_url: str, *, database: str | None = None) -> str:
    """The SQLAlchemy URL (``postgresql+asyncpg://...``) as a plain DSN for asyncpg, password
    included (it is for connecting, never for printing); ``database`` replaces its database.
    The dialect's own query parameters are dropped and ``ssl=`` becomes ``sslmode=``; the
    others (``sslmode``, ``sslrootcert``, ``application_name``...) are kept. Every direct
    asyncpg connection of the repo (the API's NOTIFY, the relay's LISTEN, database admin)
    takes its DSN from here."""
    url = make_url(database_url).set(drivername="postgresql")
    query = {key: value for key, value in url.query.items() if key not in _DIALECT_ONLY_QUERY}
    ssl = query.pop("ssl", None)
    if ssl is not None and "sslmode" not in query:
        value = ssl if isinstance(ssl, str) else ssl[-1]
        query["sslmode"] = _SSL_AS_SSLMODE.get(value.lower(), value)
    url = url.set(query=query)
    if database is not None:
        url = url.set(database=database)
    return url.render_as_string(hide_password=False)


def naming_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def build_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    connect_timeout: float = 5.0,
    command_timeout: float = 10.0,
    pool_timeout: float = 5.0,
) -> AsyncEngine:
    """One engine (one pool) per process, built in the lifespan. Its pool is reported on the
    metrics, and its statements are traced once ``setup_telemetry`` ran.

    Every wait is bounded (the ``*_DB_*_TIMEOUT_SECONDS`` settings): opening a connection
    (asyncpg's default is 60 s), each statement, and waiting for a free pooled connection
    (SQLAlchemy's default is 30 s). A database that hangs then fails requests in seconds, with
    a 503, instead of holding them.

    No ``pool_pre_ping``: a round trip before every transaction is a tax on the hot path.
    A connection the server dropped is found at its first statement instead, and
    ``retry_on_disconnect`` runs the use case again on a fresh one."""
    # Looked up on the module at each call: the SQLAlchemy instrumentation wraps it there.
    engine = sqlalchemy.ext.asyncio.create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        connect_args={"timeout": connect_timeout, "command_timeout": command_timeout},
    )
    watch_pool(engine.sync_engine)
    return engine


def build_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class UnitOfWork:
    """``async with uow:`` opens a session; it rolls back unless ``await uow.commit()`` ran.

    Services subclass it to attach their repositories in ``_start``."""

    session: AsyncSession

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory
        # Set once a COMMIT was sent: its outcome is unknown if the connection then dies.
        self.commit_started = False

    def _start(self) -> None:
        """Attach repositories to ``self.session``."""

    async def __aenter__(self) -> Self:
        self.session = self._session_factory()
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.session.rollback()
        finally:
            await self.session.close()

    async def commit(self) -> None:
        # The pending INSERTs and UPDATEs go out first: a dead connection found by them is
        # found before any COMMIT was sent, so ``retry_on_disconnect`` may run the work again.
        await self.session.flush()
        self.commit_started = True
        await self.session.commit()


U = TypeVar("U", bound=UnitOfWork)
P = ParamSpec("P")
T = TypeVar("T")


def retry_on_disconnect(
    use_case: Callable[Concatenate[U, P], Awaitable[T]],
) -> Callable[Concatenate[U, P], Awaitable[T]]:
    """Run the use case again, once, when its connection turned out to be dead (PostgreSQL
    restarted, a proxy dropped it, an administrator terminated it) before any COMMIT was
    sent. This replaces a ping on every checkout: the pool hands out connections untested,
    and SQLAlchemy, on seeing the disconnect, invalidates the whole pool, so the second run
    opens a fresh connection. A failure during or after a COMMIT is not retried: the
    transaction may have been committed."""

    @functools.wraps(use_case)
    async def run(uow: U, /, *args: P.args, **kwargs: P.kwargs) -> T:
        uow.commit_started = False
        try:
            return await use_case(uow, *args, **kwargs)
        except DBAPIError as exc:
            if not exc.connection_invalidated or uow.commit_started:
                raise
            DB_RECONNECTS.inc()
            logger.warning(
                "database connection lost; running %s again on a new one",
                use_case.__name__,
                extra={"error": f"{type(exc.orig).__name__}: {exc.orig}"},
            )
        uow.commit_started = False
        return await use_case(uow, *args, **kwargs)

    return run
