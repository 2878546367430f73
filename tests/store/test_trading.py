"""rt/store: books, positions, orders, events and idempotent answers, on both twins: what a write stores is what a
read gives back, exactly, and a write transaction keeps all of its changes or none."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rt.records.accounts import VenueRecord
from rt.records.events import Event
from rt.records.ids import new_id
from rt.records.strategies import StrategyRecord
from rt.records.trading import Book, Envelope, IdempotencyRecord, Order, Position, StoredResponse, TradeBatch
from rt.store import Store

T0 = datetime(2026, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
TINY, HUGE = Decimal("0.000000000001"), Decimal("99999999999999.9")


def position(account_id: str, status: str = "open", at: datetime = T0, **changes: object) -> Position:
    made = Position(
        new_id("pos"), account_id, "paper", "BTC/USDT", "long", Decimal(1), Decimal(100), status, created_at=at
    )  # type: ignore[arg-type]
    return dataclasses.replace(made, **changes)  # type: ignore[arg-type]


def order(account_id: str, status: str = "open", **changes: object) -> Order:
    made = Order(new_id("ord"), account_id, "paper", "BTC/USDT", "buy", "limit", Decimal(1), status, price=Decimal(90))  # type: ignore[arg-type]
    return dataclasses.replace(made, created_at=T0, updated_at=T0, **changes)  # type: ignore[arg-type]


def book(account_id: str, balance: Decimal = Decimal(10000), version: int = 0) -> Book:
    return Book(account_id, balance, version=version)


def answer(account_id: str, key: str, body: bytes = b'{"id":"ord_1"}') -> IdempotencyRecord:
    return IdempotencyRecord(account_id, key, StoredResponse(f"print-{key}", 201, body))


async def account(store: Store, name: str = "alice") -> str:
    return (await store.create_account(name)).id


async def test_a_book_reads_back_with_its_open_and_pending_positions_and_open_orders(store: Store) -> None:
    alice, bob = await account(store, "alice"), await account(store, "bob")
    kept = Book(
        alice,
        HUGE,
        currency="USDC",
        state="reducing",
        envelope=Envelope(Decimal("123.45"), Decimal("0.05"), TINY, 5),
        day="2026-05-06",
        day_realized=Decimal("-12.50"),
        realized_total=TINY,
        alerts={"exposure": "warning"},
        version=7,
    )
    open_, pending = position(alice, quantity=TINY, entry_price=HUGE), position(alice, "pending")
    closed = position(alice, "closed", closed_at=T0 + timedelta(seconds=1), realized_pnl=Decimal("-0.10"))
    resting, filled = order(alice, stop_loss=TINY), order(alice, "filled", filled_quantity=Decimal(1))
    await store.save(TradeBatch(books=[kept, book(bob)], positions=[open_, pending, closed], orders=[resting, filled]))

    books = {b.account_id: b for b in await store.load_books()}
    assert set(books) == {alice, bob}
    loaded = books[alice]
    assert loaded == dataclasses.replace(
        kept, positions={p.id: p for p in (open_, pending)}, orders={resting.id: resting}
    )
    # Exact to the digit, exponent included: the text a Decimal stores as is the text it reads back as.
    assert str(loaded.balance) == "99999999999999.9"
    assert str(loaded.positions[open_.id].quantity) == str(TINY)
    assert str(loaded.envelope.max_daily_loss) == str(TINY)
    assert books[bob].positions == {} and books[bob].orders == {}
    assert await store.load_book(alice) == loaded
    assert await store.load_book("acct_missing") is None


async def test_create_book_stores_a_first_book_and_never_replaces_one(store: Store) -> None:
    alice = await account(store)
    await store.create_book(book(alice, Decimal(500)))
    await store.create_book(book(alice, Decimal(999)))
    first = await store.load_book(alice)
    assert first is not None and first.balance == Decimal(500)

    await store.save(TradeBatch(books=[book(alice, Decimal(250), version=1)]))
    await store.create_book(book(alice, Decimal(999)))
    written = await store.load_book(alice)
    assert written is not None and (written.balance, written.version) == (Decimal(250), 1)


async def test_save_stores_the_version_it_is_given(store: Store) -> None:
    alice = await account(store)
    for version in (3, 4, 2):
        await store.save(TradeBatch(books=[book(alice, version=version)]))
        loaded = await store.load_book(alice)
        assert loaded is not None and loaded.version == version


async def test_save_marks_moves_only_open_positions_and_only_their_price(store: Store) -> None:
    alice = await account(store)
    target, closed = position(alice), position(alice, "closed", current_price=Decimal(100))
    await store.save(TradeBatch(positions=[target, closed]))
    # A write made after the mark was taken: the mark must not undo its quantity or its stop.
    await store.save(TradeBatch(positions=[dataclasses.replace(target, quantity=Decimal(2), stop_loss=Decimal(95))]))

    other = position(alice)
    await store.save(TradeBatch(positions=[other]))
    await store.save_marks(
        [
            (target.id, Decimal(99)),
            (other.id, Decimal("101.5")),
            (closed.id, Decimal(1)),
            ("pos_missing", Decimal(1)),
            (target.id, Decimal("101.5")),  # marked again: the last price given stands
        ]
    )
    await store.save_marks([])

    moved = await store.get_position(alice, target.id)
    assert moved is not None
    assert (moved.current_price, moved.quantity, moved.stop_loss) == (Decimal("101.5"), Decimal(2), Decimal(95))
    marked_too = await store.get_position(alice, other.id)
    assert marked_too is not None and marked_too.current_price == Decimal("101.5")
    untouched = await store.get_position(alice, closed.id)
    assert untouched is not None and untouched.current_price == Decimal(100)


async def test_the_first_answer_to_a_key_stays(store: Store) -> None:
    alice = await account(store)
    await store.save(TradeBatch(responses=[answer(alice, "k1", b"first")]))
    await store.save(TradeBatch(responses=[answer(alice, "k1", b"second")]))
    assert await store.get_response(alice, "k1") == StoredResponse("print-k1", 201, b"first")
    assert await store.get_response("acct_other", "k1") is None
    assert await store.get_response(alice, "k2") is None


async def test_expire_responses_drops_only_older_answers(store: Store) -> None:
    alice = await account(store)
    await store.save(TradeBatch(responses=[answer(alice, "old")]))
    await store.expire_responses(0)
    assert await store.get_response(alice, "old") is not None
    await store.expire_responses(int((datetime.now(UTC) + timedelta(minutes=1)).timestamp() * 1000))
    assert await store.get_response(alice, "old") is None


async def test_recent_events_are_each_accounts_last_in_the_order_stored(store: Store) -> None:
    # Times out of order on purpose: the order events were stored in is the order they replay in.
    a = [Event("acct_a", f"e{i}", {"i": i}, ts_us=1_000 - i) for i in range(5)]
    b = [Event("acct_b", "position.opened", {"i": i}) for i in range(2)]
    await store.save(TradeBatch(events=[a[0], b[0], a[1]]))
    await store.save(TradeBatch(events=[a[2], a[3], b[1], a[4]]))

    replayed = await store.recent_events(3)
    assert [e.id for e in replayed] == [b[0].id, a[2].id, a[3].id, b[1].id, a[4].id]
    assert replayed[1] == a[2]
    assert await store.event_counts() == {
        ("acct_a", "e0"): 1,
        ("acct_a", "e1"): 1,
        ("acct_a", "e2"): 1,
        ("acct_a", "e3"): 1,
        ("acct_a", "e4"): 1,
        ("acct_b", "position.opened"): 2,
    }


async def test_listings_filter_page_and_sort_newest_first(store: Store) -> None:
    alice = await account(store)
    made = [position(alice, at=T0 + timedelta(seconds=i)) for i in range(5)]
    twins = [position(alice, at=T0 + timedelta(seconds=9)) for _ in range(2)]
    other = [position(alice, "closed", symbol="ETH/USDT"), position("acct_other")]
    await store.save(TradeBatch(positions=made + twins + other))

    page, total = await store.list_positions(alice, ["open"], None, None, 3, 0)
    assert total == 7
    # Newest first; of one time, by id.
    assert [p.id for p in page] == [*sorted(p.id for p in twins), made[4].id]
    rest, _ = await store.list_positions(alice, ["open"], None, None, 10, 3)
    assert [p.id for p in rest] == [p.id for p in reversed(made[:4])]
    eth, total = await store.list_positions(alice, ["open", "closed"], "paper", "ETH/USDT", 10, 0)
    assert (total, [p.id for p in eth]) == (1, [other[0].id])
    assert (await store.list_positions(alice, None, "binance", None, 10, 0)) == ([], 0)
    assert await store.get_position(alice, other[1].id) is None
    assert await store.get_position("acct_other", other[1].id) == other[1]

    kept = order(alice, client_order_id="mine", venue_order_id="v1", fee=TINY)
    await store.save(TradeBatch(orders=[kept, order(alice, "canceled")]))
    orders, total = await store.list_orders(alice, ["open"], None, "BTC/USDT", 10, 0)
    assert (orders, total) == ([kept], 1)
    assert await store.get_order(alice, kept.id) == kept
    assert await store.get_order("acct_other", kept.id) is None


async def test_a_writing_commits_everything_when_its_block_ends(store: Store) -> None:
    alice = await account(store)
    await store.create_book(book(alice))
    opened = position(alice)
    async with store.writing() as writing:
        await writing.lock(alice)
        before = await writing.load_book(alice)
        assert before is not None and before.positions == {}
        assert await writing.get_response(alice, "k") is None
        await writing.save(
            TradeBatch(
                books=[book(alice, Decimal(9000), version=1)],
                positions=[opened],
                events=[Event(alice, "position.opened", {"id": opened.id})],
                responses=[answer(alice, "k")],
            )
        )
    after = await store.load_book(alice)
    assert after is not None
    assert (after.balance, after.version, list(after.positions)) == (Decimal(9000), 1, [opened.id])
    assert await store.get_response(alice, "k") is not None
    assert [e.event for e in await store.recent_events(10)] == ["position.opened"]


async def test_strategies_round_trip_and_perform_from_their_positions(store: Store) -> None:
    alice = await account(store)
    record = StrategyRecord(
        "strat_1", alice, "grid", "grid", "paper", "BTC/USDT", {"levels": 5}, {"max": "1.5"}, "active",
        state={"step": 2}, created_at=T0, updated_at=T0,
    )  # fmt: skip
    stopped = dataclasses.replace(record, id="strat_2", status="stopped", created_at=T0 + timedelta(seconds=1))
    await store.save_strategy(record)
    await store.save_strategy(stopped)
    assert await store.get_strategy(alice, "strat_1") == record
    assert await store.get_strategy("acct_other", "strat_1") is None
    assert await store.list_strategies(alice, 10, 0) == ([stopped, record], 2)
    assert await store.load_strategies() == [record]
    await store.save_strategy(dataclasses.replace(record, state={"step": 3}, stop_reason="why"))
    changed = await store.get_strategy(alice, "strat_1")
    assert changed is not None and (changed.state, changed.stop_reason) == ({"step": 3}, "why")

    win = position(alice, "closed", strategy_id="strat_1", realized_pnl=Decimal(10))
    loss = position(alice, "closed", strategy_id="strat_1", realized_pnl=Decimal(-4))
    live = position(alice, strategy_id="strat_1", current_price=Decimal(103), quantity=Decimal(2))
    await store.save(TradeBatch(positions=[win, loss, live], orders=[order(alice, "filled", strategy_id="strat_1")]))
    assert await store.strategy_performance("strat_1") == {
        "realized_pnl": Decimal(6),
        "unrealized_pnl": Decimal(6),
        "total_pnl": Decimal(12),
        "win_rate": 0.5,
        "trades": 1,
    }


async def test_venues_replace_in_place_and_delete(store: Store) -> None:
    alice, bob = await account(store, "alice"), await account(store, "bob")
    first = VenueRecord(alice, "kraken", "sealed-1", {"sandbox": True}, T0)
    assert await store.put_venue(first) is False
    assert await store.put_venue(VenueRecord(bob, "binance", "sealed-b", {}, T0)) is False
    assert await store.put_venue(dataclasses.replace(first, sealed_credentials="sealed-2", options={})) is True
    assert await store.list_venues(alice) == [dataclasses.replace(first, sealed_credentials="sealed-2", options={})]
    assert [(v.account_id, v.exchange) for v in await store.list_venues()] == sorted(
        [(alice, "kraken"), (bob, "binance")]
    )
    assert await store.delete_venue(alice, "kraken") is True
    assert await store.delete_venue(alice, "kraken") is False
    assert await store.list_venues(alice) == []


async def test_lookups_by_text_with_a_nul_character_find_nothing(store: Store) -> None:
    alice = await account(store)
    await store.save(TradeBatch(positions=[position(alice)], responses=[answer(alice, "k")]))
    assert await store.get_position(alice, "pos\x00") is None
    assert await store.list_positions(alice, ["open"], "paper", "BTC\x00", 10, 0) == ([], 0)
    assert await store.get_order(alice, "\x00") is None
    assert await store.get_response(alice, "k\x00") is None
    assert await store.find_account("alice\x00") is None
    assert await store.key_by_digest("\x00") is None


async def test_an_event_is_stored_unpublished_until_it_is_marked(store: Store) -> None:
    alice = await account(store)
    first, second, third = (Event(alice, "order.created", {"n": n}, ts_us=1_000_000 + n) for n in range(3))
    await store.save(TradeBatch(events=[first, second]))
    await store.save(TradeBatch(events=[third]))
    assert [e.id for e in await store.unpublished_events(2_000_000, 10)] == [first.id, second.id, third.id]
    # Only those stored before the cut, oldest first, at most `limit`.
    assert [e.id for e in await store.unpublished_events(1_000_002, 10)] == [first.id, second.id]
    assert [e.id for e in await store.unpublished_events(2_000_000, 1)] == [first.id]
    await store.mark_published([first.id, third.id])
    (left,) = await store.unpublished_events(2_000_000, 10)
    assert left == second
    await store.mark_published([])
    await store.mark_published([second.id])
    assert await store.unpublished_events(2_000_000, 10) == []
