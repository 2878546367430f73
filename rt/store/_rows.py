"""Dataclass <-> row: Decimals as text, datetimes as epoch ms. Column order is the dataclass's field order."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import orjson

T = TypeVar("T")


def columns(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _kinds(cls: type[Any]) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls)}


def to_row(obj: Any) -> tuple[Any, ...]:
    out: list[Any] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, datetime):
            value = int(value.timestamp() * 1000)
        out.append(value)
    return tuple(out)


def from_row(cls: type[T], row: Any) -> T:
    values: dict[str, Any] = {}
    for (name, kind), raw in zip(_kinds(cls).items(), row, strict=True):
        if raw is None:
            values[name] = None
        elif kind.startswith("Decimal"):
            values[name] = Decimal(raw)
        elif kind.startswith("datetime"):
            values[name] = datetime.fromtimestamp(raw / 1000, UTC)
        else:
            values[name] = raw
    return cls(**values)


def _exact(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__}")


def state_json(value: Any) -> str:
    """State kept as JSON (not event data, which rt.wire encodes): Decimals as their exact text."""
    return orjson.dumps(value, default=_exact).decode()
