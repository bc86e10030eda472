"""The services refuse an oversized request body themselves, not only behind the gateway: a
client that reaches a service port directly (inside the cluster, say) cannot make it buffer
and parse megabytes. The answer is the gateway's: 413 with the same JSON message."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_MAX_BODY_BYTES = 1024 * 1024  # the gateway's client_max_body_size 1m


def too_large_detail(limit: int) -> str:
    size = f"{limit // (1024 * 1024)} MiB" if limit % (1024 * 1024) == 0 else f"{limit} bytes"
    return f"request body too large: the limit is {size}"


class BodyLimitMiddleware:
    """413 at once when Content-Length says too much; otherwise counts the bytes as they
    arrive and stops reading at the limit (chunked bodies have no Content-Length)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = max_body_bytes
        self.detail = too_large_detail(max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > self.limit:
                    await self._refuse(send)
                    return
                break
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Routing re-raises HTTPException; the exception middleware answers it.
                    raise HTTPException(status_code=413, detail=self.detail)
            return message

        await self.app(scope, receive_within_limit, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": self.detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
