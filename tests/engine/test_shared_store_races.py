"""Two engines on one PostgreSQL store, the races between them: a first write against a read elsewhere, a takeover
against a write in flight, a protective close against a stop moved elsewhere, a commit against a Redis that is down,
and a failed commit against a later write elsewhere."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from rt.engine import trading
from rt.engine.engine import Changes
from tests.engine.test_shared_store import LONG, Pair, pair

__all__ = ["pair"]


async def test_a_book_created_by_a_read_while_the_first_write_runs_elsewhere_is_not_taken_for_it(pair: Pair) -> None:
    a, b, account_id = pair.a.engine, pair.b.engine, pair.account_id
    inside, go = asyncio.Event(), asyncio.Event()

    async def spend(changes: Changes) -> None:
        inside.set()
        await go.wait()
        changes.book.balance -= Decimal("40000")
        changes.book_changed = True

    first = asyncio.create_task(a.run(account_id, spend))  # a: no stored book yet -> version -1
    await inside.wait()
    await b.book(account_id)  # b reads the account meanwhile (a snapshot): creates the book, version 0
    go.set()
    await first  # a stores its book as version 0 too
    stored = await pair.a.store.load_book(account_id)
    assert stored is not None and stored.balance == Decimal("60000")

    seen: list[Decimal] = []

    async def look(changes: Changes) -> None:
        seen.append(changes.book.balance)

    await b.run(account_id, look)
    assert seen == [Decimal("60000")], "b decided on a copy the store had overwritten"


async def test_taking_over_the_tick_work_never_puts_an_older_book_in_place_of_a_newer_one(pair: Pair) -> None:
    from rt.engine.unit import atomic

    a, account_id = pair.a.engine, pair.account_id
    await a.book(account_id)
    loaded = asyncio.Event()
    load_books = a.store.load_books

    async def loading() -> list:  # type: ignore[type-arg]
        books = await load_books()
        loaded.set()
        return books

    a.store.load_books = loading  # type: ignore[method-assign]
    async with atomic(a.store):
        position, _ = await trading.open_position(a, account_id, LONG)
        taking_over = asyncio.create_task(a.refresh_all())  # the market role just came to this instance
        await loaded.wait()  # its snapshot is from before this write commits
    await taking_over
    book = a.cached_book(account_id)
    assert book is not None and position.id in book.positions, "the tick work no longer sees the open position"


async def test_a_stop_loss_moved_on_another_instance_is_not_closed_at_the_old_level(pair: Pair) -> None:
    from rt.engine.requests import PositionRequest, PositionUpdate

    a, b, account_id = pair.a, pair.b, pair.account_id
    b.engine.protects = False  # a holds the market and does the tick work
    request = PositionRequest(symbol=LONG.symbol, side="long", quantity=Decimal("1"), stop_loss=Decimal("95"))
    position, _ = await trading.open_position(a.engine, account_id, request)
    # The trader moves the stop down on b; a's copy has not heard of it yet when the next tick comes.
    await trading.update_position(b.engine, account_id, position.id, PositionUpdate(stop_loss=Decimal("90")))
    a.feed.set_price(LONG.symbol, Decimal("94"))
    await asyncio.gather(*list(a.engine._tasks))
    stored = await a.store.get_position(account_id, position.id)
    assert stored is not None and stored.status == "open", f"closed by {stored.close_reason} at a stop of 90, price 94"


async def test_a_trade_that_committed_is_not_answered_as_a_failure_when_redis_is_down(pair: Pair) -> None:
    from rt.errors import RtError

    a, account_id = pair.a, pair.account_id

    async def down(events: object) -> list:  # type: ignore[type-arg]
        raise ConnectionError("Redis unreachable")

    a.engine.bus.publish = down  # type: ignore[method-assign]
    failed: BaseException | None = None
    try:
        await trading.open_position(a.engine, account_id, LONG)
    except (RtError, Exception) as exc:  # the client sees an error: it retries, and trades again
        failed = exc
    _, total = await a.store.list_positions(account_id, ["open"], None, None, 10, 0)
    assert total == 1
    assert failed is None, f"the stored trade was answered with {failed!r}"


async def test_a_copy_whose_commit_and_reload_both_failed_is_never_taken_for_a_later_version(
    pair: Pair, monkeypatch: object
) -> None:
    from rt.store._pg_trading import PgWriting

    a, b, account_id = pair.a, pair.b, pair.account_id
    await trading.open_position(a.engine, account_id, LONG)  # version 0 everywhere
    save, load = PgWriting.save, a.store.load_book

    async def lost(self: object, batch: object) -> None:
        raise ConnectionError("connection to PostgreSQL lost")

    async def down(account_id: str) -> None:
        raise ConnectionError("connection to PostgreSQL lost")

    PgWriting.save = lost  # type: ignore[method-assign]
    a.store.load_book = down  # type: ignore[method-assign]
    try:
        await trading.open_position(a.engine, account_id, LONG)  # a's copy: version 1, never stored
    except Exception:
        pass
    finally:
        PgWriting.save = save  # type: ignore[method-assign]
        a.store.load_book = load  # type: ignore[method-assign]
    await trading.open_position(b.engine, account_id, LONG)  # b stores version 1: two positions
    seen: list[set[str]] = []

    async def look(changes: Changes) -> None:
        seen.append(set(changes.book.positions))

    await a.engine.run(account_id, look)
    stored, _ = await a.store.list_positions(account_id, ["open"], None, None, 10, 0)
    assert seen == [{p.id for p in stored}], "a decided on its own unstored copy, taken for b's version 1"
