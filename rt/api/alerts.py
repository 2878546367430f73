"""/v1/alert-hooks (hooks, the passphrase shown once, each hook's log) and POST /v1/alerts/{hook_id}, where a sender
such as TradingView posts an alert that becomes an order."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field
from starlette.responses import Response

from rt.alerts.desk import AlertDesk
from rt.api import _errors
from rt.api.models import Page, Strict
from rt.api.problems import request_id_of
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.engine.requests import Amount
from rt.errors import INSUFFICIENT_SCOPE, Forbidden
from rt.records.alerts import AlertEntry, AlertHook


class HookDefaults(Strict):
    type: Literal["market", "limit"] = "market"
    quantity: Amount | None = Field(None, description="The quantity of an alert that sends none.")
    exchange: str = Field("paper", min_length=1, max_length=40)


class HookCreate(Strict):
    name: str = Field("", max_length=100)
    symbols: list[str] = Field(
        [],
        max_length=100,
        description="Symbols the hook may trade (BTC/USDT, BTCUSDT or BINANCE:BTCUSDT; kept as BTC/USDT). Empty: any.",
    )
    max_quantity: Amount = Field(description="The largest quantity one alert may trade.")
    defaults: HookDefaults | None = Field(None, description="Absent: market orders on paper, no default quantity.")
    allow_ips: str | list[str] | None = Field(
        None, description="Source IPs or CIDRs alerts may come from, comma-separated or a list. Empty: any."
    )


class HookOut(BaseModel):
    id: str
    url: str = Field(description="Where the sender posts alerts (relative to this server).")
    name: str
    symbols: list[str]
    max_quantity: Decimal
    defaults: dict[str, Any]
    allow_ips: list[str]
    test: bool = Field(description="Made by an rt_test_ key: trades on the paper venue only.")
    created_at: datetime


class HookIssued(HookOut):
    passphrase: str = Field(description="What each alert's body carries as `passphrase`. Shown only now.")


class HookList(BaseModel):
    alert_hooks: list[HookOut]
    total: int
    page: int


class HookDeleted(BaseModel):
    id: str
    deleted: bool


class AlertOut(BaseModel):
    id: str
    hook_id: str
    received_at: datetime
    ip: str
    outcome: Literal["executed", "rejected", "duplicate", "unauthorized"]
    body: dict[str, Any] = Field(description="The body as received, without its passphrase.")
    order_ids: list[str]
    code: str | None
    detail: str | None
    latency_ms: float


class AlertList(BaseModel):
    alerts: list[AlertOut]
    total: int
    page: int


class AlertAccepted(BaseModel):
    alert_id: str
    order_id: str | None = Field(description="The order it placed (the first close order for close and flat).")
    order_ids: list[str]
    status: Literal["executed"]


def hook_json(hook: AlertHook) -> dict[str, Any]:
    return {
        "id": hook.id,
        "url": f"/v1/alerts/{hook.id}",
        "name": hook.name,
        "symbols": list(hook.symbols),
        "max_quantity": hook.max_quantity,
        "defaults": hook.defaults,
        "allow_ips": list(hook.allow_ips),
        "test": hook.test,
        "created_at": hook.created_at,
    }


def alert_json(entry: AlertEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "hook_id": entry.hook_id,
        "received_at": entry.received_at,
        "ip": entry.ip,
        "outcome": entry.outcome,
        "body": entry.body,
        "order_ids": list(entry.order_ids),
        "code": entry.code,
        "detail": entry.detail,
        "latency_ms": entry.latency_ms,
    }


def _desk(call: Call) -> AlertDesk:
    return call.runtime.alerts


async def create_hook(call: Call) -> dict[str, Any]:
    body: HookCreate = call.body
    caller = call.caller
    # A hook's alerts place orders on its passphrase alone: a key may not hand out trading it lacks.
    if scopes.ORDERS_WRITE not in caller.scopes:
        raise Forbidden(f"a hook places orders: the key needs {scopes.ORDERS_WRITE} too", code=INSUFFICIENT_SCOPE)
    hook, passphrase = await _desk(call).create(
        caller.account_id,
        max_quantity=body.max_quantity,
        name=body.name,
        symbols=body.symbols,
        defaults=body.defaults.model_dump() if body.defaults else None,
        allow_ips=body.allow_ips,
        test=caller.test,
        actor=caller.key_id,
        ip=call.ip,
    )
    return {**hook_json(hook), "passphrase": passphrase}


async def list_hooks(call: Call) -> dict[str, Any]:
    page: Page = call.query
    hooks, total = await _desk(call).list_hooks(call.caller.account_id, page.limit, (page.page - 1) * page.limit)
    return {"alert_hooks": [hook_json(h) for h in hooks], "total": total, "page": page.page}


async def get_hook(call: Call) -> dict[str, Any]:
    return hook_json(await _desk(call).get(call.caller.account_id, call.param("hook_id")))


async def delete_hook(call: Call) -> dict[str, Any]:
    hook_id = call.param("hook_id")
    await _desk(call).delete(call.caller.account_id, hook_id, actor=call.caller.key_id, ip=call.ip)
    return {"id": hook_id, "deleted": True}


async def hook_log(call: Call) -> dict[str, Any]:
    page: Page = call.query
    entries, total = await _desk(call).log(
        call.caller.account_id, call.param("hook_id"), page.limit, (page.page - 1) * page.limit
    )
    return {"alerts": [alert_json(e) for e in entries], "total": total, "page": page.page}


async def receive_alert(call: Call) -> Response:
    answer = await _desk(call).receive(call.param("hook_id"), call.data, call.ip, request_id_of(call.request))
    media = "application/json" if answer.status < 400 else "application/problem+json"
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return Response(answer.body, answer.status, media_type=media, headers=headers)


_MANAGE = (*_errors.AUTH, "BAD_REQUEST")

OPERATIONS = [
    Operation(
        "GET",
        "/v1/alert-hooks",
        list_hooks,
        "List the account's alert hooks",
        "alerts",
        scopes.ALERTS_MANAGE,
        query=Page,
        response=HookList,
        errors=_MANAGE,
    ),
    Operation(
        "POST",
        "/v1/alert-hooks",
        create_hook,
        "Create an alert hook (the passphrase is shown once)",
        "alerts",
        scopes.ALERTS_MANAGE,
        body=HookCreate,
        response=HookIssued,
        status=201,
        errors=(*_MANAGE, "REQUEST_SIGNATURE_INVALID", "ALERT_HOOK_LIMIT_REACHED"),
        description="At most 20 hooks per account. The key needs orders:write as well (403 otherwise). A hook made "
        "by an rt_test_ key trades on the paper venue only.",
    ),
    Operation(
        "GET",
        "/v1/alert-hooks/{hook_id}",
        get_hook,
        "Get an alert hook",
        "alerts",
        scopes.ALERTS_MANAGE,
        response=HookOut,
        errors=(*_errors.AUTH, "NOT_FOUND"),
    ),
    Operation(
        "DELETE",
        "/v1/alert-hooks/{hook_id}",
        delete_hook,
        "Delete an alert hook",
        "alerts",
        scopes.ALERTS_MANAGE,
        response=HookDeleted,
        errors=(*_errors.AUTH, "NOT_FOUND", "REQUEST_SIGNATURE_INVALID"),
        description="Its alerts are refused from now on (401, as an unknown hook's).",
    ),
    Operation(
        "GET",
        "/v1/alert-hooks/{hook_id}/log",
        hook_log,
        "The alerts a hook received, newest first",
        "alerts",
        scopes.ALERTS_MANAGE,
        query=Page,
        response=AlertList,
        errors=(*_MANAGE, "NOT_FOUND"),
        description="Every alert with its outcome (`executed`, `rejected`, `duplicate`, `unauthorized`), never its "
        "passphrase.",
    ),
    Operation(
        "POST",
        "/v1/alerts/{hook_id}",
        receive_alert,
        "Receive an alert (TradingView and the like): it becomes an order",
        "alerts",
        response=AlertAccepted,
        status=202,
        errors=(
            "ALERT_UNAUTHORIZED",
            "IP_NOT_ALLOWED",
            "RATE_LIMITED",
            "IP_LOCKED_OUT",
            "BAD_REQUEST",
            "VALIDATION_FAILED",
            "TRADING_LOCKED",
            "IDEMPOTENCY_CONFLICT",
            "EXCHANGE_UNAVAILABLE",
        ),
        description="No API key: the body carries the hook's `passphrase` (TradingView sends no custom headers), "
        'as JSON whatever the Content-Type. Body: `{"passphrase", "symbol" (BTC/USDT, BTCUSDT, '
        'BINANCE:BTCUSDT), "action": buy|sell|close|flat, "quantity"?, "type"?: market|limit|stop, '
        '"price"?, "stop_loss"?, "take_profit"?, "id"?}`; other fields are ignored. The same `id`, or the '
        "same body without one within RT_ALERT_DEDUPE_S, answers the first answer again and trades once. See "
        "docs/alerts.md.",
    ),
]
