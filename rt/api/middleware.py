"""Request context as pure ASGI middleware: X-Request-ID on every response, one structured log line per request
and its latency series (rt.api.metrics_middleware)."""

from __future__ import annotations

import logging
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rt.api import metrics_middleware

log = logging.getLogger("rt.http")

_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _SANE_ID.fullmatch(candidate):
                    request_id = candidate
                break
        request_id = request_id or f"req_{secrets.token_hex(10)}"
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            metrics_middleware.observe(scope, status, seconds)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "ms": round(seconds * 1000, 2),
                    "request_id": request_id,
                    "key_id": state.get("key_id"),
                    "ip": state.get("client_ip"),
                },
            )
