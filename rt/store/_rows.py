"""Dataclass <-> row: Decimals as text, datetimes as epoch ms. Column order is the dataclass's field order."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, overload

import orjson

from rt.records.accounts import Account, ApiKey, AuditEntry
from rt.records.strategies import StrategyRecord
from rt.records.trading import Book, Envelope, IdempotencyRecord
from rt.records.webhooks import RESPONSE_SNIPPET, DeliveryAttempt, WebhookDelivery, WebhookEndpoint, WebhookSecret

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
        elif kind == "bool":
            values[name] = bool(raw)  # SQLite keeps 0 / 1
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


# webhooks: endpoints with their subscriptions, deliveries with their attempts (times: created_at ms, *_us microseconds)

ENDPOINT_COLUMNS = (
    "e.id, e.account_id, e.url, e.description, e.secrets, e.status, e.disabled_reason, e.failing_since_us, e.created_at"
)
DELIVERY_COLUMNS = (
    "d.id, d.account_id, d.endpoint_id, d.event_id, d.event, d.status, d.attempts, d.created_us, d.next_attempt_us, "
    "d.last_status_code"
)
ATTEMPT_COLUMNS = "delivery_id, n, at_us, status_code, latency_ms, error, response"
# Of each delivery the store keeps (and shows) the latest attempts only: redeliveries could add them without end.
ATTEMPTS_KEPT = 50
ERROR_CHARS = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


@overload
def dt_us(value: int) -> datetime: ...
@overload
def dt_us(value: None) -> None: ...
@overload
def dt_us(value: int | None) -> datetime | None: ...
def dt_us(value: int | None) -> datetime | None:
    return None if value is None else _EPOCH + timedelta(microseconds=value)


def outside_text(text: str, limit: int) -> str:
    """Text from outside (an answer's body, an error), bounded, and storable by both twins: no NUL, no lone
    surrogate."""
    return text[:limit].replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def subscriptions(endpoint: WebhookEndpoint) -> list[tuple[str, str, int]]:
    """(endpoint id, event name, n): each name once, in the order given."""
    return [(endpoint.id, name, n) for n, name in enumerate(dict.fromkeys(endpoint.events))]


def secrets_json(secrets: Sequence[WebhookSecret], now: datetime) -> str:
    """The secrets still valid at `now`, newest first as given: an expired one signs nothing and is dropped."""
    kept = [
        {"sealed": s.sealed, "created_at": ms(s.created_at), "expires_at": ms(s.expires_at)}
        for s in secrets
        if s.valid_at(now)
    ]
    return orjson.dumps(kept).decode()


def secrets_of(text: str) -> tuple[WebhookSecret, ...]:
    return tuple(
        WebhookSecret(sealed=s["sealed"], created_at=dt(s["created_at"]) or utcnow(), expires_at=dt(s["expires_at"]))
        for s in orjson.loads(text)
    )


def endpoint_row(endpoint: WebhookEndpoint) -> tuple[Any, ...]:
    """The values of ENDPOINT_COLUMNS, in that order."""
    return (
        endpoint.id,
        endpoint.account_id,
        endpoint.url,
        endpoint.description,
        secrets_json(endpoint.secrets, utcnow()),
        endpoint.status,
        endpoint.disabled_reason,
        None if endpoint.failing_since is None else us(endpoint.failing_since),
        ms(endpoint.created_at),
    )


def endpoints_of(rows: Sequence[Any]) -> list[WebhookEndpoint]:
    """Endpoints from rows of ENDPOINT_COLUMNS followed by one subscribed event name (NULL for none), the rows of one
    endpoint together and its names in their order."""
    events: dict[str, list[str]] = {}
    heads: dict[str, Any] = {}
    for row in rows:
        heads.setdefault(row[0], row)
        names = events.setdefault(row[0], [])
        if row[9] is not None:
            names.append(row[9])
    return [
        WebhookEndpoint(
            id=row[0],
            account_id=row[1],
            url=row[2],
            description=row[3],
            secrets=secrets_of(row[4]),
            status=row[5],
            disabled_reason=row[6],
            failing_since=dt_us(row[7]),
            created_at=dt(row[8]) or utcnow(),
            events=tuple(events[row[0]]),
        )
        for row in heads.values()
    ]


def delivery_id(endpoint_id: str, event_id: str) -> str:
    """As the events trigger makes it: one id per (event, endpoint), the same across retries and redeliveries."""
    return f"whd_{event_id[4:]}{endpoint_id[4:]}"


def attempt_of(row: Any) -> DeliveryAttempt:
    """From ATTEMPT_COLUMNS."""
    return DeliveryAttempt(
        at=dt_us(int(row[2])),
        status_code=row[3],
        latency_ms=float(row[4]),
        error=row[5],
        response=row[6],
    )


def delivery_of(row: Any, log: Sequence[DeliveryAttempt] = ()) -> WebhookDelivery:
    """From DELIVERY_COLUMNS (further columns are ignored)."""
    return WebhookDelivery(
        id=row[0],
        account_id=row[1],
        endpoint_id=row[2],
        event_id=row[3],
        event=row[4],
        status=row[5],
        attempts=int(row[6]),
        created_at=dt_us(int(row[7])),
        next_attempt_at=dt_us(row[8]),
        last_status_code=row[9],
        log=tuple(log),
    )


def deliveries_of(rows: Sequence[Any], attempt_rows: Sequence[Any]) -> list[WebhookDelivery]:
    """Deliveries with their attempts (rows of ATTEMPT_COLUMNS, oldest first), the latest ATTEMPTS_KEPT of each."""
    logs: dict[str, list[DeliveryAttempt]] = {}
    for row in attempt_rows:
        logs.setdefault(row[0], []).append(attempt_of(row))
    return [delivery_of(row, logs.get(row[0], [])[-ATTEMPTS_KEPT:]) for row in rows]


def attempt_row(delivery: str, n: int, attempt: DeliveryAttempt) -> tuple[Any, ...]:
    """The values of ATTEMPT_COLUMNS, with the text from outside bounded."""
    return (
        delivery,
        n,
        us(attempt.at),
        attempt.status_code,
        float(attempt.latency_ms),
        None if attempt.error is None else outside_text(attempt.error, ERROR_CHARS),
        outside_text(attempt.response, RESPONSE_SNIPPET),
    )


def capped(
    candidates: Sequence[Any], limit: int, per_endpoint: int, busy: Mapping[str, int] | None = None
) -> list[str]:
    """Of (delivery id, endpoint id) rows, oldest due first: the ids to claim, at most `per_endpoint` of one endpoint
    (counting the `busy` ones in flight already) and `limit` in all."""
    taken: dict[str, int] = dict(busy or {})
    chosen: list[str] = []
    for delivery, endpoint in candidates:
        if len(chosen) == limit:
            break
        if taken.get(endpoint, 0) < per_endpoint:
            taken[endpoint] = taken.get(endpoint, 0) + 1
            chosen.append(delivery)
    return chosen


def next_attempt(status: str, next_attempt_us: int | None) -> int | None:
    """When a delivery is due again: only a pending one is, and it must say when."""
    if status != "pending":
        return None
    if next_attempt_us is None:
        raise ValueError("a pending delivery needs its next attempt's time")
    return next_attempt_us


def at_cap(busy: Mapping[str, int] | None, per_endpoint: int) -> list[str]:
    """The endpoints this instance has `per_endpoint` deliveries in flight to: none more of theirs is claimed."""
    return sorted(endpoint for endpoint, count in (busy or {}).items() if count >= per_endpoint)
