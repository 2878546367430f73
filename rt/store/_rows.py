"""Dataclass <-> row: Decimals as text, datetimes as epoch ms. Column order is the dataclass's field order."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

import orjson

from rt.records.accounts import Account, ApiKey, AuditEntry
from rt.records.strategies import StrategyRecord
from rt.records.trading import Book, Envelope, IdempotencyRecord

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


def ms(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


def dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


KEY_COLUMNS = (
    "id, account_id, name, prefix, digest, scopes, tier, allow_ips, test, signing_secret, "
    "created_at, last_used_at, revoked_at"
)
ACCOUNT_COLUMNS = "id, name, parent_id, created_at"
AUDIT_COLUMNS = "id, at, account_id, key_id, action, ip, detail"


def key_of(row: Any) -> ApiKey:
    return ApiKey(
        id=row[0],
        account_id=row[1],
        name=row[2],
        prefix=row[3],
        digest=row[4],
        scopes=tuple(row[5].split()) if row[5] else (),
        tier=row[6],
        allow_ips=tuple(row[7].split(",")) if row[7] else (),
        test=bool(row[8]),
        sealed_signing_secret=row[9],
        created_at=dt(row[10]) or utcnow(),
        last_used_at=dt(row[11]),
        revoked_at=dt(row[12]),
    )


def account_of(row: Any) -> Account:
    return Account(id=row[0], name=row[1], parent_id=row[2], created_at=dt(row[3]) or utcnow())


def audit_of(row: Any) -> AuditEntry:
    return AuditEntry(
        id=row[0],
        at=dt(row[1]),
        account_id=row[2],
        key_id=row[3],
        action=row[4],
        ip=row[5],
        detail=orjson.loads(row[6]),
    )


def response_row(record: IdempotencyRecord) -> tuple[Any, ...]:
    answer = record.response
    return (record.account_id, record.key, answer.fingerprint, answer.status, answer.body, int(time.time() * 1000))


def book_row(book: Book) -> tuple[Any, ...]:
    return (
        book.account_id,
        str(book.balance),
        book.currency,
        book.state,
        state_json(book.envelope.as_json()),
        book.day,
        str(book.day_realized),
        str(book.realized_total),
        orjson.dumps(book.alerts).decode(),
        int(time.time() * 1000),
        book.version,
    )


def book_of(row: Any) -> Book:
    return Book(
        account_id=row[0],
        balance=Decimal(row[1]),
        currency=row[2],
        state=row[3],
        envelope=Envelope.from_json(orjson.loads(row[4])),
        day=row[5],
        day_realized=Decimal(row[6]),
        realized_total=Decimal(row[7]),
        alerts=orjson.loads(row[8]),
        version=int(row[10]),
    )


def strategy_row(r: StrategyRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.account_id,
        r.name,
        r.type,
        r.exchange,
        r.symbol,
        orjson.dumps(r.config).decode(),
        orjson.dumps(r.risk_limits).decode(),
        r.status,
        orjson.dumps(r.state).decode(),
        r.stop_reason,
        int(r.created_at.timestamp() * 1000),
        int(r.updated_at.timestamp() * 1000),
    )


def strategy_of(row: Any) -> StrategyRecord:
    return StrategyRecord(
        id=row[0],
        account_id=row[1],
        name=row[2],
        type=row[3],
        exchange=row[4],
        symbol=row[5],
        config=orjson.loads(row[6]),
        risk_limits=orjson.loads(row[7]),
        status=row[8],
        state=orjson.loads(row[9]),
        stop_reason=row[10],
        created_at=dt(row[11]) or utcnow(),
        updated_at=dt(row[12]) or utcnow(),
    )
