"""The one place REST errors become RFC 9457 problem+json responses."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from rt import errors
from rt.api.responses import ProblemJSON
from rt.errors import RtError


def problem_response(exc: RtError, request_id: str | None) -> Response:
    return ProblemJSON(exc.problem(request_id), status_code=exc.status, headers=exc.headers)


def request_id_of(request: Request) -> str | None:
    state = request.scope.get("state") or {}
    value = state.get("request_id")
    return str(value) if value else None


async def http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no route, wrong method) in our format."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error = RtError(f"no route {request.url.path}", status=404, code=errors.NOT_FOUND)
    elif exc.status_code == 405:
        error = RtError(
            f"{request.method} is not allowed on {request.url.path}",
            status=405,
            code=errors.METHOD_NOT_ALLOWED,
            headers=dict(exc.headers or {}),
        )
    else:
        error = RtError(str(exc.detail), status=exc.status_code, code=errors.BAD_REQUEST)
    return problem_response(error, request_id_of(request))
