"""What /v1/alert-hooks and POST /v1/alerts/{hook_id} do: hooks, and each alert from its body to an order.

An alert passes, in order: the IP's lockout, the hook and its passphrase, the hook's allowlist, its rate, the parse,
then dedupe and trade under the account's write lock (rt.api.idempotency), and is written to the hook's log.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from rt import errors, wire
from rt.alerts import trade
from rt.alerts.parse import Alert, body_hash, parse, symbol_of, without_passphrase
from rt.api.idempotency import Idempotency, fingerprint
from rt.auth import audit
from rt.auth.audit import AuditLog
from rt.auth.keys import KeyHasher
from rt.auth.limiter import Limiter
from rt.auth.network import contains, normalize, parse_networks
from rt.config import ConfigError, Settings
from rt.engine.engine import Engine
from rt.engine.unit import Unit
from rt.errors import BadRequest, Conflict, Forbidden, NotFound, RtError, TooManyRequests, Unauthorized
from rt.records.alerts import AlertEntry, AlertHook, AlertOutcome
from rt.records.ids import base62, new_id
from rt.records.trading import StoredResponse
from rt.store import Store

log = logging.getLogger("rt.alerts")

MAX_HOOKS = 20
PASSPHRASE_LEN = 32
HOOK_CREATED = "alert_hook.created"
HOOK_DELETED = "alert_hook.deleted"
UNAUTHORIZED_DETAIL = "the hook or its passphrase is not valid"


@dataclass(frozen=True)
class Answer:
    """What POST /v1/alerts answers: a 202 or a problem, as bytes (a repeat gets the first answer's bytes)."""

    status: int
    body: bytes
    replayed: bool = False
    headers: dict[str, str] = field(default_factory=dict)


class _Repeat(Exception):
    """A body first seen in the previous dedupe window: answered from there, and nothing kept for this window."""

    def __init__(self, stored: StoredResponse) -> None:
        self.stored = stored


def rate_of(spec: str) -> tuple[int, int]:
    per_minute, _, burst = spec.partition("/")
    if not (per_minute.strip().isdigit() and burst.strip().isdigit()) or int(per_minute) < 1 or int(burst) < 1:
        raise ConfigError(f"RT_ALERT_RATE: {spec!r} is not PER_MINUTE/BURST, e.g. 60/10")
    return int(per_minute), int(burst)


def _now() -> datetime:
    """To the millisecond, as the store keeps it: what a create answers is what a read gives back."""
    at = datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def _locked_out(seconds: float) -> RtError:
    wait = max(1, int(seconds + 0.999))
    return TooManyRequests(
        f"too many failed authentication attempts from this address; try again in {wait}s",
        code=errors.IP_LOCKED_OUT,
        headers={"Retry-After": str(wait)},
    )


class AlertDesk:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        idempotency: Idempotency,
        limiter: Limiter,
        hasher: KeyHasher,
        audit: AuditLog,
        settings: Settings,
    ) -> None:
        self.store = store
        self.engine = engine
        self.idempotency = idempotency
        self.limiter = limiter
        self.hasher = hasher
        self.audit = audit
        self.settings = settings
        self.rate = rate_of(settings.alert_rate)
        self.clock = time.time  # the dedupe windows' clock
        # An unknown hook is compared against this, so it costs what a wrong passphrase costs.
        self._dummy = hasher.digest(base62(PASSPHRASE_LEN))

    # hooks

    async def create(
        self,
        account_id: str,
        *,
        max_quantity: Decimal,
        name: str = "",
        symbols: Sequence[str] = (),
        defaults: dict[str, Any] | None = None,
        allow_ips: str | Sequence[str] | None = None,
        test: bool = False,
        actor: str | None = None,
        ip: str | None = None,
    ) -> tuple[AlertHook, str]:
        """A new hook and its passphrase (shown once; only its digest is kept)."""
        given = defaults or {}
        kept: dict[str, Any] = {
            "type": given.get("type") or "market",
            "quantity": given.get("quantity"),
            "exchange": given.get("exchange") or "paper",
        }
        if kept["quantity"] is not None and kept["quantity"] > max_quantity:
            raise BadRequest(
                "defaults.quantity is over max_quantity",
                errors=[{"field": "defaults.quantity", "message": f"at most max_quantity ({max_quantity})"}],
            )
        if test and kept["exchange"] != "paper":
            raise Forbidden("a hook made by an rt_test_ key trades only on the paper venue", code="INSUFFICIENT_SCOPE")
        allowed = tuple(dict.fromkeys(symbol_of(s, f"symbols.{i}") for i, s in enumerate(symbols)))
        _, total = await self.store.list_hooks(account_id, 1, 0)
        if total >= MAX_HOOKS:
            raise Conflict(
                f"this account has {MAX_HOOKS} alert hooks, the most it may have; delete one first",
                code=errors.ALERT_HOOK_LIMIT_REACHED,
            )
        passphrase = base62(PASSPHRASE_LEN)
        hook = AlertHook(
            id=new_id("alh"),
            account_id=account_id,
            name=name,
            digest=self.hasher.digest(passphrase),
            symbols=allowed,
            max_quantity=max_quantity,
            defaults=kept,
            allow_ips=normalize(allow_ips),
            test=test,
            created_at=_now(),
        )
        await self.store.create_hook(hook)
        await self.audit.write(HOOK_CREATED, account_id=account_id, key_id=actor, ip=ip, hook_id=hook.id)
        return hook, passphrase

    async def get(self, account_id: str, hook_id: str) -> AlertHook:
        hook = await self.store.get_hook(hook_id)
        if hook is None or hook.account_id != account_id or hook.deleted_at is not None:
            raise NotFound(f"no alert hook {hook_id}")
        return hook

    async def list_hooks(self, account_id: str, limit: int, offset: int) -> tuple[list[AlertHook], int]:
        return await self.store.list_hooks(account_id, limit, offset)

    async def delete(self, account_id: str, hook_id: str, *, actor: str | None = None, ip: str | None = None) -> None:
        if not await self.store.delete_hook(account_id, hook_id, _now()):
            raise NotFound(f"no alert hook {hook_id}")
        await self.audit.write(HOOK_DELETED, account_id=account_id, key_id=actor, ip=ip, hook_id=hook_id)

    async def log(self, account_id: str, hook_id: str, limit: int, offset: int) -> tuple[list[AlertEntry], int]:
        await self.get(account_id, hook_id)
        return await self.store.list_alerts(account_id, hook_id, limit, offset)

    # alerts

    async def receive(self, hook_id: str, body: Any, ip: str, request_id: str | None = None) -> Answer:
        """One alert, from its body to its answer. Raises the RtError of a refusal before the trade (lockout, the
        passphrase, the allowlist, the rate, the parse); a refusal of the trade itself is an answer, kept for its
        repeats."""
        started = time.perf_counter()
        received = _now()
        locked_for = await self.limiter.locked(ip)
        if locked_for > 0:
            raise _locked_out(locked_for)
        hook = await self._authenticate(hook_id, body, ip, received, started)
        entry = _Entry(self, hook, ip, received, started, without_passphrase(body))
        try:
            self._allowed_from(hook, ip)
        except RtError as exc:
            self.audit.record(audit.AUTH_FAILED, account_id=hook.account_id, ip=ip, code=exc.code, hook_id=hook.id)
            await entry.write("unauthorized", exc)
            raise
        try:
            await self._within_rate(hook)
            alert = parse(body)
        except RtError as exc:
            await entry.write("rejected", exc)
            if exc.status == 400:
                await trade.rejected(self.engine, hook, entry.id, exc)
            raise
        try:
            answer = await self._dedupe_and_trade(hook, alert, body, entry.id, request_id)
        except RtError as exc:  # the same id with another body (409), or an outage
            await entry.write("rejected", exc)
            raise
        await entry.answered(answer)
        return answer

    async def _authenticate(self, hook_id: str, body: Any, ip: str, received: datetime, started: float) -> AlertHook:
        hook = await self.store.get_hook(hook_id) if hook_id.startswith("alh_") and len(hook_id) <= 64 else None
        passphrase = body.get("passphrase") if isinstance(body, dict) else None
        given = self.hasher.digest(passphrase if isinstance(passphrase, str) else "")
        good = hmac.compare_digest(given, hook.digest if hook is not None else self._dummy)
        if hook is not None and good and hook.deleted_at is None:
            return hook
        error: RtError = Unauthorized(UNAUTHORIZED_DETAIL, code=errors.ALERT_UNAUTHORIZED)
        if hook is not None:
            self.audit.record(
                audit.AUTH_FAILED, account_id=hook.account_id, ip=ip, code=error.code, method="POST", hook_id=hook.id
            )
            entry = _Entry(self, hook, ip, received, started, without_passphrase(body))
            await entry.write("unauthorized", error)
        else:
            self.audit.record(audit.AUTH_FAILED, account_id=None, ip=ip, code=error.code, method="POST")
        s = self.settings
        locked_for = await self.limiter.fail(ip, s.lockout_threshold, s.lockout_window, s.lockout_seconds)
        raise _locked_out(locked_for) if locked_for > 0 else error

    @staticmethod
    def _allowed_from(hook: AlertHook, ip: str) -> None:
        if hook.allow_ips and not contains(parse_networks(hook.allow_ips), ip):
            raise Forbidden(f"alerts from {ip} are not allowed for this hook", code=errors.IP_NOT_ALLOWED)

    async def _within_rate(self, hook: AlertHook) -> None:
        per_minute, burst = self.rate
        decision = await self.limiter.hit(f"alert:{hook.id}", per_minute, burst)
        if not decision.allowed:
            wait = max(1, int(decision.retry_after + 0.999))
            raise TooManyRequests(
                f"this hook's rate of {per_minute}/min (burst {burst}) is exceeded; retry in {wait}s",
                headers={"Retry-After": str(wait)},
            )

    def keys_of(self, hook: AlertHook, alert: Alert, body: Any) -> tuple[str, str | None]:
        """The idempotency key of an alert, and the previous dedupe window's key of a body without an `id`."""
        if alert.id is not None:
            return f"alert:{hook.id}:id:{alert.id}", None
        window = int(self.clock() // max(1, self.settings.alert_dedupe_s))
        base = f"alert:{hook.id}:body:{body_hash(body)}"
        return f"{base}:{window}", f"{base}:{window - 1}"

    async def _dedupe_and_trade(
        self, hook: AlertHook, alert: Alert, body: Any, alert_id: str, request_id: str | None
    ) -> Answer:
        account_id = hook.account_id
        key, earlier = self.keys_of(hook, alert, body)
        print_ = fingerprint("alert", {"hook_id": hook.id, "body": body_hash(body)})

        async def produce() -> tuple[int, bytes]:
            if earlier is not None:
                unit = Unit.current()
                assert unit is not None
                stored = await (await unit.writing()).get_response(account_id, earlier)
                if stored is not None and stored.fingerprint == print_:
                    raise _Repeat(stored)
            try:
                order_ids = await trade.execute(self.engine, hook, alert, alert_id)
            except RtError as exc:
                await trade.rejected(self.engine, hook, alert_id, exc)
                return exc.status, wire.dumps(exc.problem(request_id))
            accepted = {
                "alert_id": alert_id,
                "order_id": order_ids[0] if order_ids else None,
                "order_ids": order_ids,
                "status": "executed",
            }
            return 202, wire.dumps(accepted)

        try:
            status, answer, replayed = await self.idempotency.once(account_id, key, print_, produce)
        except _Repeat as repeat:
            status, answer, replayed = repeat.stored.status, repeat.stored.body, True
        return Answer(status, answer, replayed)


@dataclass
class _Entry:
    """The hook's log entry for one alert (never its passphrase)."""

    desk: AlertDesk
    hook: AlertHook
    ip: str
    received: datetime
    started: float
    body: dict[str, Any]
    id: str = field(default_factory=lambda: new_id("alr"))

    async def write(
        self, outcome: AlertOutcome, error: RtError | None = None, order_ids: Sequence[str] = (), note: str = ""
    ) -> None:
        entry = AlertEntry(
            id=self.id,
            hook_id=self.hook.id,
            account_id=self.hook.account_id,
            received_at=self.received,
            ip=self.ip,
            outcome=outcome,
            body=self.body,
            order_ids=tuple(order_ids),
            code=error.code if error is not None else None,
            detail=error.detail if error is not None else note or None,
            latency_ms=round((time.perf_counter() - self.started) * 1000, 3),
        )
        try:
            await self.desk.store.add_alert(entry)
        except Exception:
            # The answer matters more than its log line: the alert has been handled either way.
            log.exception("writing an alert log entry failed", extra={"hook_id": self.hook.id})

    async def answered(self, answer: Answer) -> None:
        data = orjson.loads(answer.body)
        if answer.replayed:
            first = data.get("alert_id") or f"an earlier alert (answered {answer.status} {data.get('code', '')})"
            await self.write("duplicate", order_ids=data.get("order_ids") or (), note=f"a repeat of {first}")
        elif answer.status < 300:
            await self.write("executed", order_ids=data.get("order_ids") or ())
        else:
            error = RtError(str(data.get("detail", "")), code=str(data.get("code", "")), status=answer.status)
            await self.write("rejected", error)
