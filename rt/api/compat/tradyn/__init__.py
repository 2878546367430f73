"""The Tradyn terminal's local REST API under /v1/api (docs/compat.md): account, positions, orders, trade, market data.

Every handler is a thin adapter over the engine functions the native routes call, with the same scopes, rate limits,
idempotency and Cerberus. The catch-all goes last, so only paths no Tradyn route has reach it.
"""

from __future__ import annotations

from rt.api.compat.tradyn import account, market, orders, positions, trading
from rt.api.compat.tradyn._dialect import CATCH_ALL
from rt.api.routing import Operation

OPERATIONS: list[Operation] = [
    *account.OPERATIONS,
    *positions.OPERATIONS,
    *trading.OPERATIONS,
    *orders.OPERATIONS,
    *market.OPERATIONS,
    *CATCH_ALL,
]
