"""A process that dies right after the store commits, and the settings it runs (and restarts) on."""

from __future__ import annotations

from pathlib import Path

import pytest

from rt.config import Settings
from rt.records.trading import TradeBatch
from rt.runtime import Runtime


class Died(BaseException):
    """The process ends here: nothing after this line of the request runs."""


def settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=str(data_dir),
        bootstrap=False,
        paper_symbols=("ETH/USDT=3500",),
        paper_tick_ms=0,
        tier_limits=("pro_plus=100000/100000",),
    )


def die_after_commit(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[TradeBatch]:
    """From now on the store's trading commit succeeds and then the process dies."""
    store = runtime.store
    real = store.save
    committed: list[TradeBatch] = []

    async def save_then_die(batch: TradeBatch) -> None:
        await real(batch)
        committed.append(batch)
        if batch.orders:
            raise Died

    monkeypatch.setattr(store, "save", save_then_die)
    return committed
