"""JSON from clients, read once and bounded: every REST body and every WebSocket message passes through here.

Size is bounded where the bytes arrive (the body reader, the frame limit); depth here. orjson reads up to 1024
levels but writes at most 254, so a deeper request that was read could not be fingerprinted or echoed; no request
rt understands nests more than a few levels.
"""

from __future__ import annotations

from typing import Any

import orjson

from rt.errors import BadRequest

MAX_DEPTH = 32


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and arrays nest more than `limit` levels (the outermost one is level 1)."""
    level = [value]
    depth = 0
    while level:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers:
            return False
        depth += 1
        if depth > limit:
            return True
        level = [child for c in containers for child in (c.values() if isinstance(c, dict) else c)]
    return False


def depth_error(what: str = "the body") -> str:
    return f"{what} nests objects and arrays too deep: at most {MAX_DEPTH} levels"


def loads(raw: bytes | str, what: str = "the body") -> Any:
    """Parsed JSON, or BadRequest when it is malformed or too deep."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", errors=[{"field": "body", "message": str(exc)}]) from None
    if too_deep(data):
        raise BadRequest(depth_error(what), errors=[{"field": "body", "message": f"deeper than {MAX_DEPTH} levels"}])
    return data
