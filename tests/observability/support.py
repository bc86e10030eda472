"""Shared by the observability tests."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx


@dataclass(frozen=True)
class User:
    id: int
    email: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def request_token(client: httpx.Client, email: str, password: str) -> httpx.Response:
    """POST /token/, waiting out the per-IP rate limit once: every test of the session comes
    from 127.0.0.1, so the session's logins add up."""
    answer = client.post("/token/", data={"username": email, "password": password})
    if answer.status_code == 429:
        time.sleep(min(61, int(answer.headers.get("Retry-After", "5"))))
        answer = client.post("/token/", data={"username": email, "password": password})
    return answer
