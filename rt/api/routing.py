"""Declared operations: each names its method, path, scope and models; one wrapper runs them all.

The same table builds the Starlette routes and the OpenAPI document.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from rt import errors, payload
from rt.api.idempotency import fingerprint
from rt.api.problems import problem_response, request_id_of
from rt.api.responses import JSON
from rt.auth.guard import Credentials, rate_headers
from rt.auth.network import client_ip
from rt.auth.principal import Principal
from rt.errors import BadRequest, PayloadTooLarge, RtError, UnsupportedMediaType
from rt.runtime import Runtime

log = logging.getLogger("rt.api")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLIENT_CLOSED_REQUEST = 499


@dataclass
class Call:
    """What a handler gets: the request, the runtime, the verified caller and the parsed input."""

    request: Request
    runtime: Runtime
    principal: Principal | None
    body: Any
    query: Any
    ip: str
    data: Any = None  # the body as JSON, for a route that reads it itself (no body model)
    # For an operation that keeps its answers itself (Operation.own_idempotency): the request's idempotency key and
    # fingerprint, None without a key.
    idempotency_key: str | None = None
    fingerprint: str | None = None

    @property
    def caller(self) -> Principal:
        assert self.principal is not None, "operation declared no scope"
        return self.principal

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])


Handler = Callable[[Call], Awaitable[Any]]


class Dialect:
    """How an operation's clients send their key and body and read errors. rt's own API is this class; a
    compatibility dialect (rt/api/compat/) overrides what its seed does differently, over the same pipeline.
    `error_model`, `error_media` and `status_of` tell the OpenAPI document what `error` answers."""

    error_model: type[BaseModel] | None = None  # None: rt's Problem
    error_media = "application/problem+json"
    # The OpenAPI security schemes (rt/api/openapi.py) a key may come in.
    key_schemes: tuple[str, ...] = ("ApiKey", "Bearer")

    def status_of(self, code: str, status: int) -> int:
        """The HTTP status this dialect answers for an rt error code whose native status is `status`."""
        return status

    def example(self, exc: RtError) -> dict[str, Any]:
        """The body this dialect answers for `exc`, as the OpenAPI document shows it."""
        return exc.problem()

    def api_key(self, request: Request) -> str | None:
        return _api_key(request)

    def parse(self, op: Operation, raw: bytes, content_type: str | None) -> Any:
        return parse_json(op, raw, content_type)

    def error(self, exc: RtError, request_id: str | None) -> Response:
        return problem_response(exc, request_id)


NATIVE = Dialect()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    scope: str | None = None
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[str, ...] = ()
    description: str = ""
    idempotent: bool = False
    command: str | None = None  # the WebSocket command that is this route's twin (same idempotency keys)
    also: tuple[tuple[int, str], ...] = ()  # other success statuses, with what they mean
    idempotency_field: str | None = None
    dialect: Dialect = NATIVE
    # The handler runs idempotency itself, with Call.idempotency_key and Call.fingerprint: its write may outlive the
    # request, so it cannot run inside the request's unit.
    own_idempotency: bool = False
    # What a Cerberus refusal of this route names in the Kerosyne message ("Position" validation failed).
    subject: str | None = None
    # False for a route that only answers what no other route does (a dialect's catch-all 404): not in OpenAPI.
    documented: bool = True

    @property
    def name(self) -> str:
        return self.handler.__name__


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(p) for p in err["loc"]) or "body",
            "message": err["msg"],
            "type": err["type"],
        }
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes", limit=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(op: Operation, raw: bytes, content_type: str | None) -> Any:
    """The body as JSON, read once and bounded (rt.payload): what the model validates and idempotency fingerprints.
    A route without a body model takes any JSON body, or none."""
    if op.body is None:
        return payload.loads(raw) if raw.strip() else None
    if not raw.strip():
        raise BadRequest("a JSON object body is required", errors=[{"field": "body", "message": "missing"}])
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType(f"send the body as application/json, not {media or 'no Content-Type'}")
    data = payload.loads(raw)
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object", errors=[{"field": "body", "message": "not an object"}])
    return data


def parse_body(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest("the body has invalid fields", errors=field_errors(exc)) from None


def parse_query(model: type[BaseModel], request: Request) -> BaseModel:
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise BadRequest("the query has invalid parameters", errors=field_errors(exc)) from None


def endpoint(op: Operation) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        """Client address, the key (on the head alone: no body is read for a caller refused), the body and its
        signature, parse, idempotency, call; errors become problems, a client gone mid-body gets nothing."""
        runtime: Runtime = request.app.state.runtime
        state = request.scope["state"]
        headers: dict[str, str] = {}
        try:
            ip = client_ip(
                request.client.host if request.client else None,
                request.headers.getlist("x-forwarded-for"),
                runtime.trusted_proxies,
            )
            state["client_ip"] = ip
            creds = Credentials(op.dialect.api_key(request), ip, request.method, request.headers.get("x-rt-signature"))
            verdict = await runtime.guard.authenticate(creds, op.scope) if op.scope is not None else None
            if verdict is not None:
                state["key_id"] = verdict.principal.key_id
                headers = rate_headers(verdict.rate)
            raw = b""
            if op.body is not None or request.method in WRITE_METHODS:
                raw = await read_body(request, runtime.settings.max_body_bytes)
            if verdict is not None:
                await runtime.guard.verify_body(verdict, creds, raw)
            data = op.dialect.parse(op, raw, request.headers.get("content-type"))
            body = parse_body(op.body, data) if op.body else None
            query = parse_query(op.query, request) if op.query else None
            principal = verdict.principal if verdict is not None else None
            call = Call(request, runtime, principal, body, query, ip, data)
            key = _idempotency_key(op, request, body) if op.idempotent else None
            if key is not None and principal is not None:
                print_ = fingerprint(op.command or f"{op.method} {op.path}", _params(request, data))
                if op.own_idempotency:
                    call.idempotency_key, call.fingerprint = key, print_
                    response = await _respond(op, call)
                else:
                    response = await runtime.idempotency.run(
                        principal.account_id, key, print_, lambda: _respond(op, call)
                    )
            else:
                response = await _respond(op, call)
        except ClientDisconnect:
            return _Gone()
        except RtError as exc:
            response = op.dialect.error(exc, request_id_of(request))
        except Exception as exc:
            response = op.dialect.error(_unexpected(exc, request, op), request_id_of(request))
        if headers:
            present = {name for name, _ in response.raw_headers}
            response.raw_headers.extend(
                (name.lower().encode(), value.encode())
                for name, value in headers.items()
                if name.lower().encode() not in present
            )
        return response

    run.__name__ = op.name
    return run


def _unexpected(exc: Exception, request: Request, op: Operation) -> RtError:
    """The answer to an error no RtError named: 503 when PostgreSQL or Redis is unreachable, else a 500."""
    unavailable = errors.outage(exc)
    if unavailable is not None:
        log.warning(
            "service unavailable",
            extra={"request_id": request_id_of(request), "op": op.name, "error": type(exc).__name__},
        )
        return unavailable
    log.exception("unhandled error", extra={"request_id": request_id_of(request), "op": op.name})
    return RtError("the server failed to handle this request", code=errors.INTERNAL_ERROR)


class _Gone(Response):
    """The answer to a client that closed its connection before its body arrived. It reaches no one: the server
    drops (or refuses with an OSError) what is sent on a closed connection. Sending it still tells the request's
    log line and metrics what happened: 499, nginx's "client closed request", rather than a 500."""

    def __init__(self) -> None:
        super().__init__(status_code=CLIENT_CLOSED_REQUEST)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with contextlib.suppress(OSError):
            await send({"type": "http.response.start", "status": self.status_code, "headers": []})
            await send({"type": "http.response.body", "body": b""})


async def _respond(op: Operation, call: Call) -> Response:
    try:
        result = await op.handler(call)
    except RtError as exc:
        return op.dialect.error(named(exc, op.subject), request_id_of(call.request))
    return result if isinstance(result, Response) else JSON(result, status_code=op.status)


def named(exc: RtError, subject: str | None) -> RtError:
    """A Cerberus refusal says what it refused in its Kerosyne message ("Order validation failed")."""
    if subject is not None and exc.code == errors.VALIDATION_FAILED and exc.message is None:
        exc.message = f"{subject} validation failed"
    return exc


def _params(request: Request, data: Any) -> dict[str, Any]:
    """Path parameters and body fields together, as a WebSocket command's params hold them."""
    body = {} if data is None else data
    return {**request.path_params, **(body if isinstance(body, dict) else {"body": body})}


def _idempotency_key(op: Operation, request: Request, body: Any) -> str | None:
    header = request.headers.get("idempotency-key")
    if header is not None:
        if not 1 <= len(header) <= 255:
            raise BadRequest("Idempotency-Key must be 1 to 255 characters")
        return f"h:{header}"
    if op.idempotency_field is not None and body is not None:
        value = getattr(body, op.idempotency_field, None)
        if value:
            return f"{op.idempotency_field}:{value}"
    return None


def _api_key(request: Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    authorization = request.headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return None


def routes(operations: list[Operation]) -> list[Route]:
    by_path: dict[str, list[Operation]] = {}
    for op in operations:
        by_path.setdefault(op.path, []).append(op)
    table = []
    for path, ops in by_path.items():
        handlers = {op.method: endpoint(op) for op in ops}
        table.append(Route(path, _dispatch(handlers), methods=list(handlers)))
    return table


def _dispatch(
    handlers: dict[str, Callable[[Request], Awaitable[Response]]],
) -> Callable[[Request], Awaitable[Response]]:
    if len(handlers) == 1:
        return next(iter(handlers.values()))

    async def by_method(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return by_method
