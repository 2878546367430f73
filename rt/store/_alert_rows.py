"""Alert hooks and alert log entries <-> rows, for both twins: lists and objects as JSON text, times as epoch ms."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from rt.records.alerts import AlertEntry, AlertHook

HOOK_COLUMNS = (
    "id",
    "account_id",
    "name",
    "digest",
    "symbols",
    "max_quantity",
    "defaults",
    "allow_ips",
    "test",
    "created_at",
    "deleted_at",
)
ENTRY_COLUMNS = (
    "id",
    "hook_id",
    "account_id",
    "received_at",
    "ip",
    "outcome",
    "body",
    "order_ids",
    "code",
    "detail",
    "latency_ms",
)


def ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def at(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, UTC)


def _text(value: Any) -> str:
    return orjson.dumps(value, default=_exact).decode()


def _exact(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__}")


def hook_row(hook: AlertHook) -> tuple[Any, ...]:
    return (
        hook.id,
        hook.account_id,
        hook.name,
        hook.digest,
        _text(list(hook.symbols)),
        str(hook.max_quantity),
        _text(hook.defaults),
        ",".join(hook.allow_ips),
        hook.test,
        ms(hook.created_at),
        None if hook.deleted_at is None else ms(hook.deleted_at),
    )


def hook_of(row: Any) -> AlertHook:
    defaults = orjson.loads(row[6])
    if defaults.get("quantity") is not None:
        defaults["quantity"] = Decimal(defaults["quantity"])
    created = at(row[9])
    assert created is not None
    return AlertHook(
        id=row[0],
        account_id=row[1],
        name=row[2],
        digest=row[3],
        symbols=tuple(orjson.loads(row[4])),
        max_quantity=Decimal(row[5]),
        defaults=defaults,
        allow_ips=tuple(ip for ip in row[7].split(",") if ip),
        test=bool(row[8]),
        created_at=created,
        deleted_at=at(row[10]),
    )


def entry_row(entry: AlertEntry) -> tuple[Any, ...]:
    return (
        entry.id,
        entry.hook_id,
        entry.account_id,
        ms(entry.received_at),
        entry.ip,
        entry.outcome,
        _text(entry.body),
        _text(list(entry.order_ids)),
        entry.code,
        entry.detail,
        float(entry.latency_ms),
    )


def entry_of(row: Any) -> AlertEntry:
    received = at(row[3])
    assert received is not None
    return AlertEntry(
        id=row[0],
        hook_id=row[1],
        account_id=row[2],
        received_at=received,
        ip=row[4],
        outcome=row[5],
        body=orjson.loads(row[6]),
        order_ids=tuple(orjson.loads(row[7])),
        code=row[8],
        detail=row[9],
        latency_ms=float(row[10]),
    )
