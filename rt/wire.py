"""The one encoder for everything that leaves (REST, WebSocket, webhooks, Redis) or is stored as event data.

Decimals become JSON numbers, datetimes RFC 3339 UTC with `Z`, and negative zero becomes 0. Decoding the output with
plain JSON and encoding it again gives the same bytes, so an event replayed from the store or carried through Redis
reads exactly as it did live.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME
_NEGATIVE_ZERO = b"-0.0"
_NEGATIVE_ZERO_NUMBER = re.compile(rb"-0\.0(?![0-9])")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        number = float(value)
        return number if number else 0.0  # -0, -0.00 and underflows to -0.0 all leave as 0
    if isinstance(value, datetime):
        return rfc3339(value)
    raise TypeError(f"cannot serialize {type(value).__name__}")


def _positive_zero(value: Any) -> Any:
    if isinstance(value, float):
        return value if value else 0.0
    if isinstance(value, dict):
        return {k: _positive_zero(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_positive_zero(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    out = orjson.dumps(value, default=_default, option=_OPTIONS)
    # orjson writes a float -0.0 as such. The byte search is cheap; the pattern tells -0.0 from -0.05.
    if _NEGATIVE_ZERO in out and _NEGATIVE_ZERO_NUMBER.search(out):
        out = orjson.dumps(_positive_zero(value), default=_default, option=_OPTIONS)
    return out


def rfc3339(value: datetime) -> str:
    """UTC with a Z suffix, millisecond precision."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
