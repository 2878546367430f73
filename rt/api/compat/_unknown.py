"""A dialect's answer to a path or method it does not have, in its own envelope rather than problem+json.

Registered after the dialect's routes, under its prefix: a known path asked with another method is a 405 naming the
methods it has (Starlette would pick the catch-all's full match over the route's partial one), anything else a 404.
The catch-alls are served, not documented (Operation.documented).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rt import errors
from rt.api.routing import Call, Dialect, Handler, Operation
from rt.errors import NotFound, RtError

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _handler(name: str, method: str, known: Sequence[Operation]) -> Handler:
    async def unknown(call: Call) -> Any:
        path, asked = call.request.url.path, call.request.method
        allowed = [op.method for op in known if op.path == path]
        if allowed:
            raise RtError(
                f"{asked} is not allowed on {path}; it takes {', '.join(allowed)}",
                status=405,
                code=errors.METHOD_NOT_ALLOWED,
                headers={"Allow": ", ".join(allowed)},
            )
        raise NotFound(f"no endpoint {asked} {path}")

    unknown.__name__ = f"{name}_no_endpoint_{method.lower()}"
    return unknown


def catch_all(prefix: str, name: str, tag: str, dialect: Dialect, known: Sequence[Operation]) -> list[Operation]:
    """One operation per method on `prefix/{rest:path}`, answering in `dialect`'s envelope. `dialect` should not
    read the body: an unknown path is a 404 whatever the body holds."""
    return [
        Operation(
            method,
            prefix + "/{rest:path}",
            _handler(name, method, known),
            f"Any other path or method under {prefix}: a 404 or 405 in the dialect's envelope",
            tag,
            errors=("NOT_FOUND", "METHOD_NOT_ALLOWED"),
            dialect=dialect,
            documented=False,
        )
        for method in METHODS
    ]
