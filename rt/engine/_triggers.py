"""Price levels that make something due when the market crosses them (a stop loss, a take profit, the edge of the band
in which an account's limit alerts stand), kept so a tick finds the crossed ones in O(log n + crossed); and the levels
of the limit alerts themselves."""

from __future__ import annotations

import copy
import heapq
import itertools
from collections.abc import Collection
from decimal import Decimal

from rt.engine import ledger, risk
from rt.records.trading import Book

_tokens = itertools.count(1)

# How far from the price the band's edges are first tried, then closer (a fraction of the price).
_WIDTHS = (Decimal("0.5"), Decimal("0.0625"), Decimal("0.0078125"), Decimal("0.0009765625"), Decimal("0.0001220703125"))


class Trigger:
    """Items due once the price reaches their level: rising, at or above it; falling, at or below it (strict: beyond
    it). A heap with lazy deletion: an item re-armed or disarmed leaves its old entry behind, skipped when it
    surfaces."""

    def __init__(self, rising: bool, strict: bool = False) -> None:
        self._rising = rising
        self._strict = strict
        self._heap: list[tuple[Decimal, int, str]] = []
        self._live: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._live)

    def arm(self, item: str, level: Decimal) -> None:
        token = next(_tokens)
        self._live[item] = token
        heapq.heappush(self._heap, (level if self._rising else level.copy_negate(), token, item))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._heap = [entry for entry in self._heap if self._live.get(entry[2]) == entry[1]]
            heapq.heapify(self._heap)

    def disarm(self, item: str) -> None:
        self._live.pop(item, None)

    def crossed(self, price: Decimal) -> list[str]:
        """The items this price reaches, disarmed."""
        key = price if self._rising else price.copy_negate()
        heap, live, out = self._heap, self._live, []
        while heap and (heap[0][0] < key if self._strict else heap[0][0] <= key):
            _, token, item = heapq.heappop(heap)
            if live.get(item) == token:
                del live[item]
                out.append(item)
        return out

    def drain(self) -> list[str]:
        """Every armed item, disarmed."""
        out = list(self._live)
        self._live.clear()
        self._heap.clear()
        return out


def alert_band(book: Book, price: Decimal, marked: Collection[str]) -> tuple[Decimal, Decimal] | None:
    """The prices around `price` at which the book's limit alerts stand as they are, for a book whose open positions
    all trade one market quoted so that no other market's price counts (see TickWork.index): while that market stays
    within the band no alert can change, so a tick inside it needs no look at the book. `marked` are the positions
    that market moves; any other keeps its price. None when the alerts do not stand at `price` itself: the next tick
    must look at the book.

    With every position on one market, unrealized P&L and notional move monotonically with its price, and so do
    equity, the day's loss and the exposure ratio (while equity stays positive): levels equal at both edges hold in
    between. An edge is tried far out first and then closer; a side where none holds ends at `price` itself, so any
    move that way looks at the book again."""
    if not _steady(book, price, marked):
        return None
    low = next((edge for w in _WIDTHS if _steady(book, edge := price * (1 - w), marked)), price)
    high = next((edge for w in _WIDTHS if _steady(book, edge := price * (1 + w), marked)), price)
    return low, high


def _steady(book: Book, price: Decimal, marked: Collection[str]) -> bool:
    """Whether, with the marked open positions at `price`, the alerts stand as stored and equity is positive."""
    trial = copy.copy(book)
    trial.positions = {}
    for key, position in book.positions.items():
        if position.status == "open" and position.id in marked:
            position = copy.copy(position)
            position.current_price = price
        trial.positions[key] = position
    return ledger.equity(trial) > 0 and not alerts_differ(trial)


def level(used: Decimal) -> str:
    """The alert a limit used this far stands at."""
    return "breached" if used >= 1 else "warning" if used >= risk.WARNING_AT else ""


def alerts_differ(book: Book) -> bool:
    """Whether the book's limit alerts no longer stand as stored."""
    return any(level(used) != book.alerts.get(check, "") for check, (used, _, _) in risk.utilization(book).items())
