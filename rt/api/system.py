"""Unauthenticated routes: health, readiness, server time, the OpenAPI document and its docs page."""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse, Response

from rt import __version__
from rt.api.responses import JSON
from rt.api.routing import Call, Operation
from rt.config import Settings
from rt.errors import outage
from rt.server import masked

_CHECK_TIMEOUT = 2.0


class Health(BaseModel):
    status: str
    version: str


class RoleState(BaseModel):
    held: bool
    token: int


class Ready(BaseModel):
    status: str
    checks: dict[str, str] = Field(
        description="store, limiter, bus: `ok`, or `error: <service> at <where> unreachable (<why>)` (or `failed` for "
        "another error), the URL's password masked; exchanges: `ok` or `degraded: <venues> disconnected`."
    )
    instance: str
    roles: dict[str, RoleState] = Field(
        description="Every role this instance takes part in (market, tick work, strategies, the dead man's switch "
        "sweeper `deadman`, ...), held or not, with its last fencing token."
    )


class ServerTime(BaseModel):
    server_time_ms: int


async def health(call: Call) -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


def _where(settings: Settings, check: str) -> str:
    """The service behind a check and how it is reached, as it may be shown (password masked)."""
    if check == "store":
        url = settings.store_url
        if url.startswith(("postgresql://", "postgres://")):
            return f"PostgreSQL at {masked(url)}"
        return f"SQLite at {url.removeprefix('sqlite:///')}"
    if settings.redis_url:
        return f"Redis at {masked(settings.redis_url)}"
    return "the in-process twin"


def _failure(settings: Settings, check: str, exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"error: {_where(settings, check)} unreachable (no answer within {_CHECK_TIMEOUT:g} s)"
    verdict = "unreachable" if outage(exc) is not None else "failed"
    return f"error: {_where(settings, check)} {verdict} ({type(exc).__name__})"


async def ready(call: Call) -> Response:
    runtime = call.runtime
    checks: dict[str, str] = {}
    probes = (("store", runtime.store.ping), ("limiter", runtime.limiter.ping), ("bus", runtime.bus.ping))
    for name, probe in probes:
        try:
            await asyncio.wait_for(probe(), _CHECK_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = _failure(runtime.settings, name, exc)
    ok = all(v == "ok" for v in checks.values())
    # A real venue that is down answers 503 on its own routes; it does not take the whole instance out of service.
    down = [v.id for v in runtime.engine.venues.all() if not v.connected]
    checks["exchanges"] = f"degraded: {', '.join(sorted(set(down)))} disconnected" if down else "ok"
    every = {**runtime.roles.snapshot(), **runtime.sessions.roles.snapshot()}  # the dead man's switch has its own
    roles = {name: {"held": r["held"], "token": r["token"]} for name, r in every.items()}
    body = {"status": "ok" if ok else "unavailable", "checks": checks, "instance": runtime.instance_id, "roles": roles}
    return JSON(body, status_code=200 if ok else 503)


async def server_time(call: Call) -> dict[str, Any]:
    return {"server_time_ms": int(time.time() * 1000)}


async def openapi(call: Call) -> Response:
    return JSON(call.request.app.state.openapi)


async def asyncapi_document(call: Call) -> Response:
    return JSON(call.request.app.state.asyncapi)


async def docs(call: Call) -> Response:
    page = resources.files("rt.api").joinpath("docs.html").read_text()
    return HTMLResponse(page)


OPERATIONS = [
    Operation("GET", "/v1/health", health, "Liveness", "system", response=Health),
    Operation(
        "GET",
        "/v1/ready",
        ready,
        "Readiness of the store, limiter, bus and venues, and this instance's roles",
        "system",
        response=Ready,
    ),
    Operation("GET", "/v1/time", server_time, "Server time, for signing clients", "system", response=ServerTime),
    Operation("GET", "/v1/openapi.json", openapi, "This API as OpenAPI 3.1", "system"),
    Operation("GET", "/v1/asyncapi.json", asyncapi_document, "The WebSocket protocol as AsyncAPI 3.0", "system"),
    Operation("GET", "/v1/docs", docs, "API reference page (works offline)", "system"),
]
