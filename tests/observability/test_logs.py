"""The logs of the whole end-to-end run (every process of the stack, as `make run` prints them):
JSON lines with the trace and request ids, and not one password, token or key. This test runs
last (see conftest.py), so it reads what every other test made the stack log."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

import httpx
import pytest

from tests.observability.support import User, request_token
from tests.stack import Stack

pytestmark = pytest.mark.e2e

# Passwords other end-to-end tests send (the README walkthrough's, test_pipeline's).
KNOWN_TEST_PASSWORDS = ("correct-horse", "pipeline-pass")
SECRET_PATTERNS = {
    "a JWT": re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}"),
    "a private key": re.compile(r"PRIVATE KEY"),
    "a password hash": re.compile(r"\$argon2"),
    "an authorization header": re.compile(r"(?i)bearer\s+(?!\[REDACTED\])[A-Za-z0-9._-]{8,}"),
    "credentials in a URL": re.compile(r"://[^/\s:@\"]+:(?!\[REDACTED\])[^@/\s\"]+@"),
}
SECRET_FIELD = re.compile(r"(?i)password|passwd|secret|token|authorization|api_?key|cookie")
OUR_SERVICES = {"auth", "orders", "event-consumer", "worker"}


def _json_lines(logs: str) -> list[dict[str, Any]]:
    """The JSON records of the log: the supervisor prefixes each line with `time name.1 | `."""
    records = []
    for line in logs.splitlines():
        _, _, payload = line.partition(" | ")
        if payload.startswith("{"):
            try:
                records.append(json.loads(payload))
            except json.JSONDecodeError:
                continue
    return records


def _secret_fields(record: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(record, dict):
        for key, value in record.items():
            harmless = value in ("[REDACTED]", None) or isinstance(value, bool | int | float)
            if SECRET_FIELD.search(str(key)) and not harmless:
                found.append(f"{path}{key}={value!r}")
            found.extend(_secret_fields(value, f"{path}{key}."))
    return found


def test_no_password_token_or_key_reaches_the_logs(stack: Stack, user: User) -> None:
    wrong_password = f"wrong-{secrets.token_urlsafe(12)}"
    forged = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImZvcmdlZCJ9.eyJzdWIiOiIxIn0." + secrets.token_urlsafe(32)
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        # The failure paths are the ones that tend to log what they were given.
        assert request_token(client, user.email, wrong_password).status_code == 401
        taken = client.post("/register/", json={"email": user.email, "password": wrong_password})
        assert taken.status_code == 409
        invalid = client.post("/register/", json={"email": "nope", "password": wrong_password})
        assert invalid.status_code == 422
        forged_auth = {"Authorization": f"Bearer {forged}"}
        assert client.get(f"/orders/user/{user.id}/", headers=forged_auth).status_code == 401
        assert client.get(f"/orders/user/{user.id}/", headers=user.auth).status_code == 200
    time.sleep(0.5)  # the log file trails the answers a little

    logs = stack.logs()
    for name, value in {
        "a user's password": user.password,
        "a wrong password": wrong_password,
        "an access token": user.token,
        "an access token's signature": user.token.rsplit(".", 1)[-1],
        "a forged token": forged,
        **{f"the test password {p!r}": p for p in KNOWN_TEST_PASSWORDS},
    }.items():
        assert value not in logs, f"{name} is in the logs"
    for name, pattern in SECRET_PATTERNS.items():
        match = pattern.search(logs)
        assert match is None, (
            f"{name} is in the logs: …{logs[max(0, match.start() - 200) : match.end()]}"
        )

    records = _json_lines(logs)
    ours = [record for record in records if record.get("service") in OUR_SERVICES]
    assert ours, "no JSON log line from the services"
    leaked = [field for record in records for field in _secret_fields(record)]
    assert not leaked, f"fields with secrets: {leaked[:5]}"
    assert not [record for record in records if "color_message" in record]
    for record in ours:
        assert {"timestamp", "level", "service", "message"} <= record.keys(), record


def test_log_lines_carry_trace_and_request_ids(stack: Stack, user: User) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        answer = client.get(
            "/orders/00000000-0000-4000-8000-000000000000/",
            headers={**user.auth, "X-Request-ID": "log-test-request"},
        )
        assert answer.status_code == 404
    deadline = time.monotonic() + 5  # the log file trails the answers a little
    while "log-test-request" not in stack.logs() and time.monotonic() < deadline:
        time.sleep(0.1)
    records = _json_lines(stack.logs())
    # The pipeline's lines (an order from an earlier test of the run) name their trace.
    pipeline = [
        record
        for record in records
        if str(record.get("message", "")).startswith(("new_order received", "Order "))
    ]
    assert pipeline, "no pipeline log line in the run"
    for record in pipeline:
        assert re.fullmatch(r"[0-9a-f]{32}", record.get("trace_id", "")), record
        assert re.fullmatch(r"[0-9a-f]{16}", record.get("span_id", "")), record
    gateway = [record for record in records if record.get("request_id") == "log-test-request"]
    assert gateway, "the request id is in no log line"
    # A service's line written while it answers a request names the request and its trace.
    issued = [
        record
        for record in records
        if record.get("service") == "auth" and record.get("message") == "token issued"
    ]
    assert issued, "no `token issued` line in the run"
    for record in issued:
        assert record.get("request_id"), record
        assert re.fullmatch(r"[0-9a-f]{32}", record.get("trace_id", "")), record
