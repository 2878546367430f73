"""Starlette responses whose bodies rt.wire encodes."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from rt.wire import dumps


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


class ProblemJSON(JSON):
    media_type = "application/problem+json"
