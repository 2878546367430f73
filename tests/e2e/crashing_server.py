"""`rt serve` killed by SIGKILL the moment a trade's commit returns: nothing of the request runs after it.

Run as `python -m tests.e2e.crashing_server`; it is the real server with only the store's trading commit wrapped.
"""

from __future__ import annotations

import os
import signal

from rt.cli import main
from rt.records.trading import TradeBatch
from rt.store._sqlite_trading import TradingTables

_save = TradingTables.save


async def _save_then_die(self: TradingTables, batch: TradeBatch) -> None:
    await _save(self, batch)
    if batch.orders:
        os.kill(os.getpid(), signal.SIGKILL)


TradingTables.save = _save_then_die  # type: ignore[method-assign]

if __name__ == "__main__":
    main(["serve"])
