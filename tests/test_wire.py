"""rt/wire: the one encoder for what leaves (REST, WebSocket, Redis) or is stored (events): stable under a round trip,
no negative zero, no web framework behind it."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from rt import wire

AT = datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)

EVENT_DATA = {
    "id": "pos_1",
    "entry_price": Decimal("46200.50"),
    "quantity": Decimal("0.010"),
    "unrealized_pnl": Decimal("-0.00"),
    "realized_pnl": Decimal("-120"),
    "fee": Decimal("0.0000462005"),
    "price_step": Decimal("1E-8"),
    "created_at": AT,
    "closed_at": None,
    "utilization": 0.8125,
    "checks": ["position_size", "exposure"],
    "nested": {"at": AT.astimezone(timezone(timedelta(hours=2))), "amounts": [Decimal("1.5"), Decimal("-0")]},
}


def test_what_is_sent_again_after_a_round_trip_is_the_same_bytes() -> None:
    """A stored or Redis-carried event is decoded with plain JSON and encoded again: it must not change shape."""
    once = wire.dumps(EVENT_DATA)
    assert wire.dumps(orjson.loads(once)) == once
    assert wire.dumps(orjson.loads(wire.dumps(orjson.loads(once)))) == once


def test_money_is_a_json_number_and_times_are_rfc3339_utc_with_z() -> None:
    decoded = orjson.loads(wire.dumps(EVENT_DATA))
    assert decoded["entry_price"] == 46200.5 and isinstance(decoded["entry_price"], float)
    assert decoded["realized_pnl"] == -120
    assert decoded["fee"] == 0.0000462005
    assert decoded["created_at"] == "2026-03-04T05:06:07.891Z"
    assert decoded["nested"]["at"] == "2026-03-04T05:06:07.891Z"


@pytest.mark.parametrize(
    "value",
    [Decimal("-0"), Decimal("-0.00"), Decimal("-0E-8"), Decimal("-1E-400"), -0.0, round(-0.00001, 4)],
    ids=["decimal", "decimal-scaled", "decimal-exponent", "decimal-underflow", "float", "rounded-float"],
)
def test_negative_zero_never_reaches_the_wire(value: object) -> None:
    for shape in (value, [value], {"pnl": value}, {"a": [{"b": (value, 1)}]}):
        out = wire.dumps(shape)
        assert b"-0" not in out, out
    assert wire.dumps({"pnl": value}) == b'{"pnl":0.0}'


def test_small_negative_numbers_keep_their_sign() -> None:
    assert (
        wire.dumps([Decimal("-0.05"), -0.05, Decimal("-0.001"), -1e-9, "-0.0"]) == b'[-0.05,-0.05,-0.001,-1e-9,"-0.0"]'
    )


def test_values_it_cannot_encode_are_refused_not_stringified() -> None:
    with pytest.raises(TypeError):
        wire.dumps({"a": {1, 2}})
    with pytest.raises(TypeError):
        wire.dumps({"a": object()})


def test_the_encoder_needs_no_web_framework() -> None:
    probe = "import sys, rt.wire; print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
