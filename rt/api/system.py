"""Unauthenticated routes: health, readiness, server time, the OpenAPI document and its docs page."""

from __future__ import annotations

import asyncio
import time
from importlib import resources
from typing import Any

from pydantic import BaseModel
from starlette.responses import HTMLResponse, Response

from rt import __version__
from rt.api.responses import JSON
from rt.api.routing import Call, Operation

_CHECK_TIMEOUT = 2.0


class Health(BaseModel):
    status: str
    version: str


class RoleState(BaseModel):
    held: bool
    token: int


class Ready(BaseModel):
    status: str
    checks: dict[str, str]
    instance: str
    roles: dict[str, RoleState]


class ServerTime(BaseModel):
    server_time_ms: int


async def health(call: Call) -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


async def ready(call: Call) -> Response:
    runtime = call.runtime
    checks: dict[str, str] = {}
    probes = (("store", runtime.store.ping), ("limiter", runtime.limiter.ping), ("bus", runtime.bus.ping))
    for name, probe in probes:
        try:
            await asyncio.wait_for(probe(), _CHECK_TIMEOUT)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    # A real venue that is down answers 503 on its own routes; it does not take the whole instance out of service.
    down = [v.id for v in runtime.engine.venues.all() if not v.connected]
    checks["exchanges"] = f"degraded: {', '.join(sorted(set(down)))} disconnected" if down else "ok"
    roles = {name: {"held": r["held"], "token": r["token"]} for name, r in runtime.roles.snapshot().items()}
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
