"""Request latency per route template and status, as pure ASGI middleware."""

from __future__ import annotations

import functools
import re
import time
from typing import Any

from prometheus_client import Histogram
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rt.metrics import REQUEST_SECONDS

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_CONVERTER = re.compile(r"{(\w+):\w+}")


@functools.cache  # one entry per route of the table
def template(path: str) -> str:
    """`/v1/markets/{symbol:path}/ticker` as the OpenAPI document names it: `/v1/markets/{symbol}/ticker`."""
    return _CONVERTER.sub(r"{\1}", path)


def route_of(scope: Scope) -> str:
    """The template of the route that served the request, never the raw path (one series per route, not per id)."""
    route: Any = scope.get("route")
    if route is None:
        # Answered before routing (a CORS preflight, say): the route it was meant for, if any.
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            if candidate.matches(scope)[0] is not Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return template(path) if isinstance(path, str) else UNMATCHED


@functools.cache  # methods, routes and statuses are few: a lookup here is cheaper than labels()
def _series(method: str, route: str, status: int) -> Histogram:
    return REQUEST_SECONDS.labels(method, route, str(status))


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            _series(method, route_of(scope), status).observe(time.perf_counter() - started)
