"""Orders and positions say whether they were booked on a simulated venue, on both twins: the flag reads back as
written, and rows from before it existed read as simulated exactly when they are the paper venue's."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from rt.records.ids import new_id
from rt.records.trading import Book, Order, Position, TradeBatch
from rt.store import Store, migrations, open_store, postgres, sqlite
from rt.store._rows import columns, to_row

T0 = datetime(2026, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)


def position(account_id: str, exchange: str, simulated: bool = False) -> Position:
    return Position(
        new_id("pos"),
        account_id,
        exchange,
        "BTC/USDT",
        "long",
        Decimal(1),
        Decimal(100),
        "open",
        created_at=T0,
        simulated=simulated,
    )


def order(account_id: str, exchange: str, simulated: bool = False) -> Order:
    return Order(
        new_id("ord"),
        account_id,
        exchange,
        "BTC/USDT",
        "buy",
        "limit",
        Decimal(1),
        "open",
        price=Decimal(90),
        created_at=T0,
        updated_at=T0,
        simulated=simulated,
    )


async def test_the_simulated_flag_reads_back_as_written(store: Store) -> None:
    alice = (await store.create_account("alice")).id
    dry, real = position(alice, "binance", simulated=True), position(alice, "binance")
    resting_dry, resting_real = order(alice, "binance", simulated=True), order(alice, "binance")
    await store.save(
        TradeBatch(books=[Book(alice, Decimal(1000))], positions=[dry, real], orders=[resting_dry, resting_real])
    )

    assert (await store.get_position(alice, dry.id)) == dry
    assert (await store.get_position(alice, real.id)) == real
    assert (await store.get_order(alice, resting_dry.id)) == resting_dry
    stored_real = await store.get_order(alice, resting_real.id)
    assert stored_real is not None and stored_real.simulated is False
    loaded = await store.load_book(alice)
    assert loaded is not None
    assert {p.id: p.simulated for p in loaded.positions.values()} == {dry.id: True, real.id: False}
    assert {o.id: o.simulated for o in loaded.orders.values()} == {resting_dry.id: True, resting_real.id: False}
    listed, _ = await store.list_positions(alice, None, None, None, 10, 0)
    assert sorted(p.simulated for p in listed) == [False, True]


def _before_the_flag(dialect: str) -> list[tuple[int, str]]:
    steps = migrations.load(dialect)
    [flag] = [version for version, sql in steps if "ADD COLUMN simulated" in sql]
    return [(version, sql) for version, sql in steps if version < flag]


async def test_rows_from_before_the_flag_are_simulated_when_they_are_the_paper_venues(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    dialect = "sqlite" if store_url.startswith("sqlite") else "postgres"
    with monkeypatch.context() as patched:
        patched.setattr(sqlite if dialect == "sqlite" else postgres, "load", lambda _: _before_the_flag(dialect))
        old = await open_store(store_url)
        alice = (await old.create_account("alice")).id
        await old.close()
    rows = [
        ("positions", columns(Position), to_row(paper_position := position(alice, "paper"))),
        ("positions", columns(Position), to_row(real_position := position(alice, "binance"))),
        ("orders", columns(Order), to_row(paper_order := order(alice, "paper"))),
        ("orders", columns(Order), to_row(real_order := order(alice, "binance"))),
    ]
    # As a store of the old schema wrote them: every column but the flag (the last).
    if dialect == "sqlite":
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as db:
            for table, cols, values in rows:
                db.execute(
                    f"INSERT INTO {table} ({', '.join(cols[:-1])}) VALUES ({', '.join('?' * (len(cols) - 1))})",
                    values[:-1],
                )
    else:
        conn = await asyncpg.connect(store_url)
        try:
            for table, cols, values in rows:
                marks = ", ".join(f"${i}" for i in range(1, len(cols)))
                await conn.execute(f"INSERT INTO {table} ({', '.join(cols[:-1])}) VALUES ({marks})", *values[:-1])
        finally:
            await conn.close()

    migrated = await open_store(store_url)
    try:
        got_paper, got_real = (
            await migrated.get_position(alice, paper_position.id),
            await migrated.get_position(alice, real_position.id),
        )
        assert got_paper is not None and got_real is not None
        assert (got_paper.simulated, got_real.simulated) == (True, False)
        paper_o, real_o = (
            await migrated.get_order(alice, paper_order.id),
            await migrated.get_order(alice, real_order.id),
        )
        assert paper_o is not None and real_o is not None
        assert (paper_o.simulated, real_o.simulated) == (True, False)
    finally:
        await migrated.close()
