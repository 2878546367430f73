"""rt/store/sqlite: a read never sees the store from before a write that committed before the read began.

Reads share one connection. A statement left active across an await would hold that connection's read snapshot
open, and every read queued behind it would see the store as it was then: a position closed a moment ago would
read as open, and an idempotent answer just stored would read as missing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from rt.engine.models import Position, now
from rt.ids import new_id
from rt.store.models import IdempotencyRecord, StoredResponse, TradeBatch
from rt.store.sqlite import SQLiteStore

ACCOUNT = "acct_reads"
ROUNDS = 60


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = await SQLiteStore.open(str(tmp_path / "data" / "rt.db"))
    try:
        yield opened
    finally:
        await opened.close()


def position(status: str = "open") -> Position:
    return Position(new_id("pos"), ACCOUNT, "paper", "BTC/USDT", "long", Decimal(1), Decimal(100), status)  # type: ignore[arg-type]


async def close_then_read(store: SQLiteStore, target: Position, key: str) -> tuple[str | None, bool]:
    """Close the position and keep an answer in one commit, then read both back."""
    await asyncio.sleep(0)
    closed = dataclasses.replace(target, status="closed", closed_at=now())
    kept = IdempotencyRecord(ACCOUNT, key, StoredResponse("print", 201, b"{}"))
    await store.save(TradeBatch(positions=[closed], responses=[kept]))
    read = await store.get_position(ACCOUNT, target.id)
    answer = await store.get_response(ACCOUNT, key)
    return (read.status if read else None), answer is not None


async def test_a_read_after_a_commit_sees_it_while_listings_run(store: SQLiteStore) -> None:
    await store.save(TradeBatch(positions=[position() for _ in range(200)]))
    stale = 0
    for round_ in range(ROUNDS):
        target = position()
        await store.save(TradeBatch(positions=[target]))
        listings = [store.list_positions(ACCOUNT, None, None, None, 500, 0) for _ in range(4)]
        *_, (status, answered) = await asyncio.gather(*listings, close_then_read(store, target, f"k{round_}"))
        stale += status != "closed" or not answered
    assert stale == 0, f"{stale} of {ROUNDS} reads saw the store from before a committed write"
