"""/v1/risk and /v1/emergency: Cerberus's envelope and Charon's kill switch."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field

from rt.api import _errors
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.engine import kill, risk
from rt.engine.engine import Changes
from rt.engine.requests import EmergencyKill, EnvelopeIn, RiskKill
from rt.errors import NotFound
from rt.records.trading import Envelope


class EnvelopeOut(BaseModel):
    max_position_size: Decimal
    max_exposure: Decimal
    max_daily_loss: Decimal
    max_concurrent_positions: int


class RiskOut(BaseModel):
    envelope: EnvelopeOut
    current: dict[str, Any]
    status: str
    trading_state: str


class KillReport(BaseModel):
    command_id: str
    action: str
    account_id: str
    trading_state: str
    orders_canceled: int
    orders_failed: int = Field(description="Open orders whose cancel the venue failed: still open.")
    positions_closed: int
    positions_failed: int = Field(description="Positions whose close the venue failed: still open.")
    strategies_halted: int
    latency_ms: float
    status: Literal["completed", "partial"] = Field(
        description="Kerosyne's status. The reply comes once every cancel and close has its venue's answer: "
        "`completed`, or `partial` when some failed (`orders_failed`, `positions_failed`; the account stays "
        "locked; call again to retry them)."
    )
    positions_closing: int = Field(description="Kerosyne's name for `positions_closed`.")
    strategies_halting: int = Field(description="Kerosyne's name for `strategies_halted`.")
    estimated_completion: datetime = Field(description="When the work was done (it is, when the reply comes).")


def _risk_json(call: Call, book: Any) -> dict[str, Any]:
    return risk.report(book, call.runtime.engine.config.leverage)


async def get_envelope(call: Call) -> dict[str, Any]:
    return _risk_json(call, await call.runtime.engine.book(call.caller.account_id))


async def put_envelope(call: Call) -> dict[str, Any]:
    body: EnvelopeIn = call.body
    engine = call.runtime.engine

    async def command(changes: Changes) -> None:
        book = changes.book
        book.envelope = Envelope(
            body.max_position_size, body.max_exposure, body.max_daily_loss, body.max_concurrent_positions
        )
        if body.trading_state is not None and book.state != "locked":
            book.state = body.trading_state
        changes.book_changed = True
        changes.event("risk.envelope_updated", {"envelope": book.envelope.as_json(), "trading_state": book.state})

    await engine.run(call.caller.account_id, command)
    return _risk_json(call, await engine.book(call.caller.account_id))


async def emergency_kill(call: Call) -> dict[str, Any]:
    body: EmergencyKill = call.body
    return await kill.execute(
        call.runtime.engine, call.caller.account_id, "KILL", body.reason, actor=call.caller.key_id
    )


async def risk_kill(call: Call) -> dict[str, Any]:
    body: RiskKill = call.body
    target = body.account_id or call.caller.account_id
    if target != call.caller.account_id:
        account = await call.runtime.store.get_account(target)
        if account is None or account.parent_id != call.caller.account_id:
            raise NotFound(f"no account {target} among this account and its sub-accounts")
    return await kill.execute(call.runtime.engine, target, body.action, body.reason, actor=call.caller.key_id)


OPERATIONS = [
    Operation(
        "GET",
        "/v1/risk/envelope",
        get_envelope,
        "The risk envelope, its utilization and status",
        "risk",
        scopes.RISK_READ,
        response=RiskOut,
        errors=_errors.AUTH,
    ),
    Operation(
        "PUT",
        "/v1/risk/envelope",
        put_envelope,
        "Change the risk limits",
        "risk",
        scopes.RISK_KILL,
        body=EnvelopeIn,
        response=RiskOut,
        errors=(*_errors.WRITE, "IDEMPOTENCY_CONFLICT"),
        idempotent=True,
    ),
    Operation(
        "POST",
        "/v1/emergency/kill",
        emergency_kill,
        "Charon: close everything and lock trading",
        "risk",
        scopes.RISK_KILL,
        body=EmergencyKill,
        response=KillReport,
        errors=(*_errors.WRITE, "IDEMPOTENCY_CONFLICT"),
        command="emergency.kill",
        idempotent=True,
        description="Cancels every open order, closes every position at market, halts strategies and locks "
        "the account (423 TRADING_LOCKED for new orders) until POST /v1/risk/kill with UNLOCK. The lock "
        "survives restarts.",
    ),
    Operation(
        "POST",
        "/v1/risk/kill",
        risk_kill,
        "Risk command on this account or a sub-account",
        "risk",
        scopes.RISK_KILL,
        body=RiskKill,
        response=KillReport,
        errors=(*_errors.WRITE, "NOT_FOUND", "IDEMPOTENCY_CONFLICT"),
        idempotent=True,
        description="CLOSE_ALL closes every position; FLATTEN also cancels every order; LOCK locks trading; "
        "UNLOCK lifts the lock.",
    ),
]
