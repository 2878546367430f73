"""create_app(): the Starlette application, its routes and its lifespan."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import WebSocketRoute

from rt.api import (
    account,
    asyncapi,
    compat,
    keys,
    markets,
    openapi,
    orders,
    positions,
    risk,
    strategies,
    system,
    webhooks,
    ws,
)
from rt.api.alerts import OPERATIONS as ALERT_OPERATIONS
from rt.api.middleware import RequestContext
from rt.api.problems import http_exception
from rt.api.routing import Operation, routes
from rt.auth.manage import IssuedKey
from rt.config import Settings
from rt.runtime import bootstrap, open_runtime
from rt.session.endpoint import SessionRoute, websocket_endpoint

OPERATIONS: list[Operation] = [
    *system.OPERATIONS,
    *account.OPERATIONS,
    *positions.OPERATIONS,
    *orders.OPERATIONS,
    *markets.OPERATIONS,
    *strategies.OPERATIONS,
    *risk.OPERATIONS,
    *keys.OPERATIONS,
    *ALERT_OPERATIONS,
    *webhooks.OPERATIONS,
    *ws.OPERATIONS,
    *compat.OPERATIONS,
]


def announce(issued: IssuedKey) -> None:
    """The bootstrap key goes to stdout once, never to the logs."""
    record = issued.record
    sys.stdout.write(
        f"rt: created account default ({record.account_id}) and a full-access {record.tier} key.\n"
        f"rt: API key (shown only now): {issued.key}\n"
        f"rt: signing secret (shown only now): {issued.signing_secret}\n"
    )
    sys.stdout.flush()


def create_app(settings: Settings) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_runtime(settings, background=True) as runtime:
            if settings.bootstrap:
                issued = await bootstrap(runtime)
                if issued is not None:
                    announce(issued)
            app.state.runtime = runtime
            yield

    middleware = [Middleware(SessionRoute), Middleware(RequestContext)]
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=[
                    "X-API-Key",
                    "Authorization",
                    "Content-Type",
                    "Idempotency-Key",
                    "X-RT-Signature",
                    "X-Request-ID",
                ],
                expose_headers=[
                    "X-Request-ID",
                    "X-RateLimit-Limit",
                    "X-RateLimit-Remaining",
                    "X-RateLimit-Reset",
                    "Retry-After",
                ],
            )
        )
    app = Starlette(
        routes=[*routes(OPERATIONS), WebSocketRoute("/v1/ws", websocket_endpoint)],
        middleware=middleware,
        exception_handlers={HTTPException: http_exception},
        lifespan=lifespan,
    )
    # Starlette would redirect /v1/account/ to an absolute URL built from the client's Host header.
    app.router.redirect_slashes = False
    app.state.openapi = openapi.build(OPERATIONS)
    app.state.asyncapi = asyncapi.build()
    return app
