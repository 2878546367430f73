"""Two engines on one PostgreSQL store, as two instances run them: each write sees every earlier write of the other,
whatever each had in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest

from rt.api.idempotency import Idempotency
from rt.bus.memory import MemoryBus
from rt.engine import kill, trading
from rt.engine.engine import Engine
from rt.engine.requests import PositionRequest
from rt.errors import RtError
from rt.exchanges.feed import MarketFeed
from rt.exchanges.paper import PaperExchange
from rt.exchanges.registry import Venues
from rt.records.events import Event
from rt.records.trading import Envelope
from rt.store import Store, open_store
from tests.conftest import need_postgres
from tests.engine.conftest import FEE, PRICES, SYMBOL
from tests.pg import database

LONG = PositionRequest(symbol=SYMBOL, side="long", quantity=Decimal("1"))


@dataclass
class Instance:
    store: Store
    feed: MarketFeed
    engine: Engine


@dataclass
class Pair:
    a: Instance
    b: Instance
    account_id: str


async def _instance(url: str, bus: MemoryBus) -> Instance:
    store = await open_store(url)
    feed = MarketFeed(dict(PRICES), interval=0)
    engine = Engine(store, bus, Venues(PaperExchange(feed, FEE)))
    await engine.start()
    return Instance(store, feed, engine)


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    """Two engines on one fresh database and one bus; each follows the bus for the other's writes, but the tests
    that check the store's guarantee stop following, so only the store can keep them right."""
    async with database(await need_postgres()) as url:
        bus = MemoryBus()
        a, b = await _instance(url, bus), await _instance(url, bus)
        account_id = (await a.store.create_account("trader")).id
        try:
            yield Pair(a, b, account_id)
        finally:
            for instance in (a, b):
                await instance.engine.close()
                await instance.store.close()
            await bus.close()


async def _open(engine: Engine, account_id: str) -> bool:
    try:
        await trading.open_position(engine, account_id, LONG)
    except RtError as exc:
        assert exc.code == "VALIDATION_FAILED", exc
        return False
    return True


async def test_a_copy_behind_the_store_is_reloaded_before_the_next_write(pair: Pair) -> None:
    a, b, account_id = pair.a.engine, pair.b.engine, pair.account_id
    # Both engines hold a copy of the book from before any write.
    await a.book(account_id)
    await b.book(account_id)

    async def limit(changes: object) -> None:
        book = changes.book  # type: ignore[attr-defined]
        book.envelope = Envelope(**{**vars(book.envelope), "max_concurrent_positions": 2})
        changes.book_changed = True  # type: ignore[attr-defined]

    await a.run(account_id, limit)
    assert await _open(a, account_id)
    # b's copy still says no positions and the default limit of 20: it must read the store's before deciding.
    assert await _open(b, account_id)
    assert not await _open(b, account_id)
    assert not await _open(a, account_id)
    _, total = await pair.a.store.list_positions(account_id, ["open"], None, None, 10, 0)
    assert total == 2


async def test_a_burst_on_both_engines_at_once_never_passes_the_limit(pair: Pair) -> None:
    a, b, account_id = pair.a.engine, pair.b.engine, pair.account_id

    async def limit(changes: object) -> None:
        book = changes.book  # type: ignore[attr-defined]
        book.envelope = Envelope(**{**vars(book.envelope), "max_concurrent_positions": 5})
        changes.book_changed = True  # type: ignore[attr-defined]

    await a.run(account_id, limit)
    results = await asyncio.gather(*(_open(a if i % 2 else b, account_id) for i in range(40)))
    assert sum(results) == 5
    _, total = await pair.b.store.list_positions(account_id, ["open"], None, None, 50, 0)
    assert total == 5


async def test_a_mark_on_a_replaced_copy_never_reopens_a_position_closed_elsewhere(pair: Pair) -> None:
    a, b, account_id = pair.a, pair.b, pair.account_id
    position, _ = await trading.open_position(a.engine, account_id, LONG)
    await b.engine.book(account_id)
    # a marks its copy of the position to a new price; b closes it.
    a.feed.set_price(SYMBOL, Decimal("101"))
    await trading.close_position(b.engine, account_id, position.id)
    # a's next write of the account must not store its old, open copy of the position with the marks.
    assert await _open(a.engine, account_id)
    stored = await a.store.get_position(account_id, position.id)
    assert stored is not None and stored.status == "closed"
    await a.engine.ticks.flush_marks()
    stored = await a.store.get_position(account_id, position.id)
    assert stored is not None and stored.status == "closed"


async def test_a_kill_on_one_engine_refuses_the_next_command_on_the_other(pair: Pair) -> None:
    a, b, account_id = pair.a.engine, pair.b.engine, pair.account_id
    await a.book(account_id)  # a's copy falls behind with b's write
    await trading.open_position(b, account_id, LONG)
    report = await kill.execute(a, account_id, "KILL")
    assert report["positions_closed"] == 1
    with pytest.raises(RtError) as refused:
        await trading.open_position(b, account_id, LONG)
    assert refused.value.code == "TRADING_LOCKED"


async def test_one_idempotency_key_on_both_engines_at_once_runs_once(pair: Pair) -> None:
    a, b, account_id = pair.a.engine, pair.b.engine, pair.account_id
    runs = 0

    def producer(engine: Engine) -> Callable[[], Awaitable[tuple[int, bytes]]]:
        async def produce() -> tuple[int, bytes]:
            nonlocal runs
            runs += 1
            position, _ = await trading.open_position(engine, account_id, LONG)
            return 201, position.id.encode()

        return produce

    answers = await asyncio.gather(
        *(Idempotency(e).once(account_id, "same-key", "print", producer(e)) for e in (a, b, a, b))
    )
    assert runs == 1
    assert len({body for _, body, _ in answers}) == 1
    assert sorted(replayed for _, _, replayed in answers) == [False, True, True, True]
    _, total = await pair.a.store.list_positions(account_id, None, None, None, 10, 0)
    assert total == 1


async def test_an_engine_following_the_bus_reads_the_other_engines_writes(pair: Pair) -> None:
    a, b, account_id = pair.a.engine, pair.b.engine, pair.account_id
    await a.book(account_id)
    follower = asyncio.create_task(a.follow())
    try:
        await asyncio.sleep(0)
        position, _ = await trading.open_position(b, account_id, LONG)
        async with asyncio.timeout(5):
            while position.id not in (await a.book(account_id)).positions:  # noqa: ASYNC110 - the reload is the follower task's own
                await asyncio.sleep(0.01)
        assert (await a.book(account_id)).balance == (await b.book(account_id)).balance
    finally:
        follower.cancel()


async def test_an_engine_not_doing_the_tick_work_reloads_a_book_written_elsewhere_when_it_reads_it(pair: Pair) -> None:
    a, b, account_id = pair.a.engine, pair.b.engine, pair.account_id
    a.protects = False
    before = await a.book(account_id)
    follower = asyncio.create_task(a.follow())
    try:
        await asyncio.sleep(0)
        position, _ = await trading.open_position(b, account_id, LONG)
        async with asyncio.timeout(5):
            while position.id not in (await a.book(account_id)).positions:  # noqa: ASYNC110 - as a reader polls
                await asyncio.sleep(0.01)
        assert a.cached_book(account_id) is not before
        assert (await a.book(account_id)).version == (await b.book(account_id)).version
    finally:
        follower.cancel()


async def test_an_engine_that_fell_behind_the_bus_reloads_every_book_and_keeps_following(pair: Pair) -> None:
    a, account_id = pair.a.engine, pair.account_id
    bus = MemoryBus(bound=2)
    a.bus = bus
    reloaded = asyncio.Event()

    async def refresh_all() -> None:
        reloaded.set()

    a.refresh_all = refresh_all  # type: ignore[method-assign]
    follower = asyncio.create_task(a.follow())
    try:
        await asyncio.sleep(0)
        # More events than the follower's buffer holds, before it runs again.
        await bus.publish([Event(account_id, "order.created", {"n": n}) for n in range(5)])
        async with asyncio.timeout(5):
            await reloaded.wait()
        assert not follower.done()
    finally:
        follower.cancel()
        await bus.close()
