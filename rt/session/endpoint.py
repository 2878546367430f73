"""GET /v1/ws: the handshake. A token from POST /v1/ws/token in `?token=`, in a first `auth` message, or in a first
`subscribe` (rt's, or Kraken's v1 or v2 shape), which the session then performs."""

from __future__ import annotations

import asyncio
import logging

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from rt.api.responses import ProblemJSON
from rt.auth.network import client_ip, contains, parse_networks
from rt.auth.principal import Principal
from rt.errors import IP_LOCKED_OUT, RtError
from rt.runtime import Runtime
from rt.session import protocol
from rt.session.connection import Session, receive_frame
from rt.session.protocol import CloseCode
from rt.session.wire import WIRE, AsgiWire, Wire

log = logging.getLogger("rt.session")


async def _principal(runtime: Runtime, token: str, ip: str) -> Principal | None:
    principal = await runtime.tokens.consume(token)
    if principal is None:
        return None
    if principal.allow_ips and not contains(parse_networks(principal.allow_ips), ip):
        return None
    record = await runtime.store.get_key(principal.key_id)
    if record is None or record.revoked_at is not None:
        return None
    return principal


async def _deny(ws: WebSocket, error: RtError) -> None:
    await ws.send_denial_response(ProblemJSON(error.problem(), status_code=error.status, headers=error.headers))


class SessionRoute:
    """GET /v1/ws straight to the endpoint with uvicorn's own `receive` and `send`: Starlette's wrappers cost a call
    (and a coroutine held for the connection's life) per message, and a session reports its errors itself."""

    def __init__(self, app: ASGIApp, path: str = "/v1/ws") -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == self.path:
            await websocket_endpoint(WebSocket(scope, receive, send), send, receive)
        else:
            await self.app(scope, receive, send)


async def websocket_endpoint(ws: WebSocket, raw_send: Send | None = None, raw_receive: Receive | None = None) -> None:
    runtime: Runtime = ws.app.state.runtime
    settings = runtime.settings
    # Read here, not through ws.headers and ws.query_params, which would keep them for the connection's life.
    headers, query = Headers(scope=ws.scope), QueryParams(ws.scope["query_string"])
    origin = headers.get("origin")
    if settings.cors_origins and origin is not None and origin not in settings.cors_origins:
        await _deny(ws, RtError(f"origin {origin} is not allowed", status=403, code="ORIGIN_NOT_ALLOWED"))
        return
    if runtime.sessions.closing:
        await _deny(ws, RtError("the server is shutting down", status=503, code="SERVICE_UNAVAILABLE"))
        return
    peer = ws.client.host if ws.client else None
    ip = client_ip(peer, headers.getlist("x-forwarded-for"), runtime.trusted_proxies)
    locked_for = await runtime.limiter.locked(ip)
    if locked_for > 0:
        await _deny(
            ws,
            RtError(
                "too many failed authentication attempts from this address",
                status=429,
                code=IP_LOCKED_OUT,
                headers={"Retry-After": str(int(locked_for) + 1)},
            ),
        )
        return
    token = query.get("token")
    principal = None
    if token is not None:
        principal = await _principal(runtime, token, ip)
        if principal is not None and not runtime.sessions.admit(principal):
            await _deny(
                ws,
                RtError(
                    f"this key already has {settings.ws_max_per_key} open sessions", status=429, code="RATE_LIMITED"
                ),
            )
            return
    await ws.accept()
    first = None
    if principal is None:
        if token is None:
            opening = await _opening(ws)
            if opening is None:
                return
            if opening.token is None:
                await _close(ws, CloseCode.TOKEN_INVALID, opening.reason)
                return
            token, first = opening.token, opening.then
            principal = await _principal(runtime, token, ip)
        if principal is None:
            await _refuse(runtime, ws, ip)
            return
        if not runtime.sessions.admit(principal):
            await ws.close(CloseCode.RATE_LIMITED, "too many sessions for this key")
            return
    batch = query.get("batch", "1") != "0"
    del headers, query
    wire: Wire | None = ws.scope.get("extensions", {}).get(WIRE)
    fallback = None
    if wire is None:  # not under `rt serve`'s protocol: the same contract over ASGI send
        wire = fallback = AsgiWire(raw_send or ws.send)
    receive = raw_receive or ws.receive
    session = Session(receive, runtime.sessions.context, principal, wire, batch=batch, token=token, first=first)
    runtime.sessions.register(session)
    try:
        await session.run()
    finally:
        runtime.sessions.unregister(session)
        if fallback is not None:
            await fallback.stop()


async def _opening(ws: WebSocket) -> protocol.Opening | None:
    """The first frame's token and what to do once it authenticates (protocol.opening); None when the client left.
    Only a token that is presented and refused counts toward the IP lockout: a frame without one tried nothing."""
    try:
        raw = await asyncio.wait_for(receive_frame(ws.receive), protocol.AUTH_TIMEOUT_S)
    except TimeoutError:
        return protocol.Opening(None, reason=f"no message within {protocol.AUTH_TIMEOUT_S:g} s: {protocol.NO_TOKEN}")
    except WebSocketDisconnect:
        return None
    return protocol.opening(raw)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    try:
        await ws.close(code, reason)
    except Exception:
        log.debug("close before authentication failed", exc_info=True)


async def _refuse(runtime: Runtime, ws: WebSocket, ip: str) -> None:
    s = runtime.settings
    await runtime.limiter.fail(ip, s.lockout_threshold, s.lockout_window, s.lockout_seconds)
    runtime.audit.record("auth.failed", account_id=None, ip=ip, code="WS_TOKEN_INVALID", method="WS")
    await _close(ws, CloseCode.TOKEN_INVALID, protocol.TOKEN_REFUSED)
