"""Request latency per route template and status, observed by the request middleware (rt.api.middleware)."""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Histogram
from starlette.routing import Match
from starlette.types import Scope

from rt.api.openapi import openapi_path
from rt.metrics import REQUEST_SECONDS

UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# `/v1/markets/{symbol:path}/ticker` as the OpenAPI document names it; one entry per route of the table.
_template = functools.cache(openapi_path)


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
    return _template(path) if isinstance(path, str) else UNMATCHED


@functools.cache  # methods, routes and statuses are few: a lookup here is cheaper than labels()
def _series(method: str, route: str, status: int) -> Histogram:
    return REQUEST_SECONDS.labels(method, route, str(status))


def observe(scope: Scope, status: int, seconds: float) -> None:
    method = scope["method"] if scope["method"] in _METHODS else "other"
    _series(method, route_of(scope), status).observe(seconds)
