"""Login protection across two auth processes behind one proxy: the counts live in Redis, so
a guesser spread over the replicas meets the same limits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from order_testing import free_port

from auth_service.settings import Settings

from .conftest import REDIS_URL

PASSWORD = "right-password"
WRONG = "wrong-password"


@pytest.fixture
def two_processes(
    database_url: str,
    make_settings: Callable[..., Settings],
    private_key_path: Path,
    tmp_path: Path,
) -> Iterator[list[str]]:
    settings = make_settings()
    env = {
        **os.environ,
        "AUTH_ENVIRONMENT": "test",
        "AUTH_DATABASE_URL": database_url,
        "AUTH_REDIS_URL": REDIS_URL,
        "AUTH_REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "AUTH_JWT_PRIVATE_KEY_PATH": str(private_key_path),
        "AUTH_PASSWORD_HASH_TIME_COST": "1",
        "AUTH_PASSWORD_HASH_MEMORY_KIB": "1024",
        "AUTH_LOG_LEVEL": "WARNING",
        "OTEL_SDK_DISABLED": "true",
    }
    cli = Path(sys.executable).parent / "auth-service"
    ports = [free_port(), free_port()]
    log = (tmp_path / "auth.log").open("wb")
    processes = [
        subprocess.Popen([str(cli), "serve", "--port", str(port)], env=env, stdout=log, stderr=log)
        for port in ports
    ]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        # Generous: the start of a process is slow on a busy 2-core machine.
        deadline = time.monotonic() + 120
        for url, process in zip(urls, processes, strict=True):
            while True:
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                logs = (tmp_path / "auth.log").read_text(errors="replace")
                assert process.poll() is None, f"auth process exited: {logs}"
                assert time.monotonic() < deadline, f"auth processes did not start: {logs}"
                time.sleep(0.2)
        yield urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        log.close()


async def test_the_guard_holds_across_two_api_processes_behind_the_proxy(
    two_processes: list[str], new_email: Callable[[], str]
) -> None:
    email = new_email()
    attacker = {"X-Forwarded-For": "198.51.100.140"}
    owner = {"X-Forwarded-For": "203.0.113.140"}
    async with httpx.AsyncClient() as http:

        async def attempt(n: int, password: str, headers: dict[str, str]) -> int:
            response = await http.post(
                f"{two_processes[n % 2]}/token/",
                data={"username": email, "password": password},
                headers=headers,
            )
            return response.status_code

        registered = await http.post(
            f"{two_processes[0]}/register/", json={"email": email, "password": PASSWORD}
        )
        assert registered.status_code == 201

        # Failures alternate between the processes; the count is one.
        statuses = [await attempt(n, WRONG, attacker) for n in range(8)]
        right_from_attacker = [await attempt(n, PASSWORD, attacker) for n in range(2)]
        right_from_owner = [await attempt(n, PASSWORD, owner) for n in range(2)]

    assert statuses == [401] * 5 + [429] * 3
    assert right_from_attacker == [429, 429]
    assert right_from_owner == [200, 200]
