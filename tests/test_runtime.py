"""rt/runtime: the process's parts wired together; here, the order in which a tick reaches them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from rt.config import Settings
from rt.engine import trading
from rt.engine.requests import PositionRequest
from rt.runtime import open_runtime

D = Decimal


class _Reader:
    """A session on `ticks:BTC/USDT` that reads its position's price the moment each tick frame reaches it."""

    def __init__(self, read: object) -> None:
        self.read = read
        self.seen: list[Decimal] = []

    def offer(self, out: object) -> None:
        self.seen.append(self.read())  # type: ignore[operator]

    def fell_behind(self) -> None:
        raise AssertionError("nothing is held")


async def test_a_client_that_sees_a_tick_reads_positions_marked_to_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), paper_tick_ms=0, paper_symbols=("BTC/USDT=100",))
    async with open_runtime(settings, background=True) as runtime:
        account = await runtime.keys.create_account("ticks", actor="tests")
        request = PositionRequest.model_validate({"symbol": "BTC/USDT", "side": "long", "quantity": "1"})
        position, _ = await trading.open_position(runtime.engine, account.id, request)
        book = runtime.engine.cached_book(account.id)
        assert book is not None
        reader = _Reader(lambda: book.positions[position.id].current_price)
        async with runtime.hub.subscribe(account.id, "ticks:BTC/USDT", reader) as subscription:
            subscription.start(0)
            for price in ("101", "99.5", "103"):
                runtime.feed.set_price("BTC/USDT", D(price))
        assert reader.seen == [D("101"), D("99.5"), D("103")]
