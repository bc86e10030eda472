"""JSON-lines logging: timestamp, level, service, message, the trace and span ids of the current
span, and the request id, on every record. Secrets never reach the output: fields named like
one are masked, and tokens, passwords, key material, password hashes and credentials in URLs
are masked wherever they appear in a message or a traceback."""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from order_common.telemetry import current_trace_ids

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
# Extras that only repeat the message (uvicorn's ANSI-coloured copy of it).
_DROPPED = {"color_message"}

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"password|passwd|secret|token|authorization|api[_-]?key|private[_-]?key|cookie|credential",
    re.IGNORECASE,
)
_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM blocks of private keys.
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
        ),
        REDACTED,
    ),
    # JWTs (three base64url parts, the first a JSON header).
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Authorization headers.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    # Password hashes (they can be cracked offline).
    (re.compile(r"\$argon2(?:id|i|d)\$[^\s'\")\]}]+"), REDACTED),
    # user:password@ in URLs (DSNs, broker URLs).
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/:@\s]*:)[^@/\s]+@", re.I), rf"\1{REDACTED}@"),
    # password=..., "token": "...", secret: ... in free text.
    (
        re.compile(
            r"(?i)((?:password|passwd|secret|token|api[_-]?key)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"'&,;}]+"
        ),
        rf"\1{REDACTED}",
    ),
]


def redact(text: str) -> str:
    """``text`` with every secret-looking part replaced by ``[REDACTED]``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    return value


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        ids = current_trace_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in _DROPPED and not key.startswith("_"):
                entry[key] = _redact_value(key, value)
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc_info"] = redact(record.exc_text)
        return json.dumps(entry, default=lambda value: redact(str(value)))


def configure_logging(service: str, level: str = "INFO", *, access_log: bool = False) -> None:
    """Send every logger's records to stdout as JSON lines. Safe to call more than once."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; route them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = []
        uvicorn_logger.propagate = True
    # The access log repeats what the gateway logs, costs a record per request and would print
    # query strings: off unless asked for (``*_ACCESS_LOG``).
    logging.getLogger("uvicorn.access").setLevel(logging.INFO if access_log else logging.WARNING)


class Throttle:
    """At most one record every ``every`` seconds per message, for the warnings an outage
    repeats on every request (Redis down: the limiter, the cache read, the cache write); the
    next record says how many were held back in ``suppressed``. Metrics still count each."""

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self._clock = clock
        self._lock = threading.Lock()
        self._state: dict[tuple[str, str], tuple[float, int]] = {}

    def reset(self) -> None:
        """Say every message again at its next occurrence (a test looking for one)."""
        with self._lock:
            self._state.clear()

    def warning(self, logger: logging.Logger, msg: str, *args: object, **kwargs: Any) -> None:
        key = (logger.name, msg)
        now = self._clock()
        with self._lock:
            last, held = self._state.get(key, (float("-inf"), 0))
            if now - last < self.every:
                self._state[key] = (last, held + 1)
                return
            self._state[key] = (now, 0)
        extra = dict(kwargs.pop("extra", None) or {})
        if held:
            extra["suppressed"] = held
        logger.warning(msg, *args, extra=extra, **kwargs)


# The one the services share.
OUTAGE_WARNINGS = Throttle()
