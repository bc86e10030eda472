from __future__ import annotations

import secrets
import uuid

import httpx
import pytest

from tests.observability.support import User, request_token
from tests.stack import Stack

# The log test reads the logs of the whole run, so it goes last.
LAST = "tests/observability/test_logs.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.nodeid.startswith(LAST))


@pytest.fixture(scope="session")
def user(stack: Stack) -> User:
    """One account for the observability tests: /token/ is rate limited per client IP, and the
    whole session comes from 127.0.0.1."""
    email = f"observer-{uuid.uuid4().hex[:8]}@example.com"
    password = f"pw-{secrets.token_urlsafe(12)}"
    with httpx.Client(base_url=stack.base_url, timeout=10) as client:
        registered = client.post("/register/", json={"email": email, "password": password})
        assert registered.status_code == 201, registered.text
        issued = request_token(client, email, password)
        assert issued.status_code == 200, issued.text
    return User(registered.json()["id"], email, password, issued.json()["access_token"])
