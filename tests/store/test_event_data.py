"""rt/store: an event's data reads back from the store as it was sent live, byte for byte once encoded."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from rt import wire
from rt.records.events import Event
from rt.records.trading import TradeBatch
from rt.store import Store

AT = datetime(2026, 3, 4, 5, 6, 7, 891234, tzinfo=UTC)


def position_data() -> dict[str, object]:
    return {
        "id": "pos_1",
        "side": "short",
        "entry_price": Decimal("46200.50"),
        "current_price": Decimal("46200.50"),
        "quantity": Decimal("0.010"),
        "unrealized_pnl": Decimal("-0.00"),
        "realized_pnl": Decimal("-120.0"),
        "stop_loss": None,
        "created_at": AT,
        "closed_at": None,
        "checks": ("position_size", "exposure"),
        "utilization": 0.8125,
    }


async def test_stored_event_data_encodes_to_the_same_bytes_as_the_live_event(store: Store) -> None:
    live = Event("acct_a", "position.opened", position_data())
    await store.save(TradeBatch(events=[live]))

    (replayed,) = await store.recent_events(10)
    assert (replayed.id, replayed.event, replayed.ts_us) == (live.id, live.event, live.ts_us)
    assert wire.dumps(replayed.data) == wire.dumps(live.data)
    assert replayed.data["entry_price"] == 46200.5
    assert replayed.data["created_at"] == "2026-03-04T05:06:07.891Z"


async def test_event_data_the_wire_cannot_encode_is_refused_not_stored_as_text(store: Store) -> None:
    with pytest.raises(TypeError):
        await store.save(TradeBatch(events=[Event("acct_a", "position.opened", {"oops": object()})]))
    assert await store.recent_events(10) == []
