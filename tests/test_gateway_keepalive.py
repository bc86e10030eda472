"""An error answer never breaks the connection it went out on: behind the real gateway (nginx
with kept-alive upstream connections), the request after a 500 or a 4xx is served.

Before the fix, Starlette re-raised an unhandled error after answering it, uvicorn closed the
connection, and nginx's next request on that cached upstream connection met "connection reset
by peer" — a 503 for a request that had nothing wrong with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.stack import BIN, ROOT, free_port

APP = textwrap.dedent(
    """
    import logging
    import sys
    import time

    import uvicorn
    from fastapi import FastAPI
    from pydantic import BaseModel

    from order_common.errors import Conflict
    from order_common.http_errors import install_error_handlers
    from order_common.http import SlashAgnosticRouter, install_middleware
    from order_common.settings import ApiSettings

    # The services' JSON logging of a traceback takes milliseconds; here it takes 100 ms, so
    # the next request reliably arrives while an error is being logged.
    class SlowHandler(logging.Handler):
        def emit(self, record):
            if record.exc_info:
                time.sleep(0.1)

    logging.getLogger().addHandler(SlowHandler())

    class Body(BaseModel):
        n: int

    app = FastAPI(redirect_slashes=False)
    router = SlashAgnosticRouter(prefix="/orders")

    @router.get("/ok")
    async def ok() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @router.post("/conflict")
    async def conflict() -> None:
        raise Conflict("already there")

    @router.post("/validate")
    async def validate(body: Body) -> Body:
        return body

    app.include_router(router)
    install_error_handlers(app)
    install_middleware(app, ApiSettings(_env_file=None))
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    workdir = tmp_path_factory.mktemp("keepalive")
    (workdir / "app.py").write_text(APP)
    app_port, gateway_port = free_port(), free_port()
    env = {
        **os.environ,
        "GATEWAY_PORT": str(gateway_port),
        "GATEWAY_RUN_DIR": str(workdir / "gateway"),
        "ORDERS_PORT": str(app_port),
        "AUTH_PORT": str(free_port()),
    }
    log = workdir / "gateway.log"
    with log.open("wb") as out:
        processes = [
            subprocess.Popen([BIN / "python", workdir / "app.py", str(app_port)], env=env),
            subprocess.Popen(
                ["bash", ROOT / "scripts" / "gateway.sh"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            ),
        ]
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/orders/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the gateway did not come up:\n{log.read_text()}"
            time.sleep(0.2)
        yield base, log
    finally:
        for proc in processes:
            os.killpg(proc.pid, signal.SIGTERM) if proc.args[0] == "bash" else proc.terminate()
            proc.wait(timeout=20)


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/orders/boom", None, 500),
        ("POST", "/orders/validate", {"n": "not a number"}, 422),
        ("POST", "/orders/conflict", None, 409),
        ("GET", "/orders/nothing-here", None, 404),
    ],
)
def test_the_request_after_an_error_on_the_same_connection_is_served(
    gateway: tuple[str, Path], method: str, path: str, body: object, status: int
) -> None:
    base, log = gateway
    before = len(log.read_text(errors="replace"))
    with httpx.Client(base_url=base, timeout=10) as client:  # one kept-alive connection
        for _ in range(10):
            error = client.request(method, path, json=body)
            assert error.status_code == status, error.text
            # A POST first: nginx retries an idempotent request that failed on a cached
            # connection by itself, never a POST.
            posted = client.post("/orders/validate", json={"n": 1})
            assert posted.status_code == 200, f"{posted.status_code} {posted.text}"
            after = client.get("/orders/ok")
            assert after.status_code == 200, f"{after.status_code} {after.text}"
    errors = log.read_text(errors="replace")[before:]
    assert "reset by peer" not in errors
    assert "prematurely closed" not in errors


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
