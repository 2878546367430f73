"""Candles (OHLCV bars) and the timeframes rt speaks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

Timeframe = Literal["1m", "5m", "15m", "30m", "1h", "4h", "1d"]

# Each timeframe's length in milliseconds. Bars open on multiples of it since the Unix epoch, so every bar opens on a
# UTC boundary: 4h bars at 00:00, 04:00, ... and 1d bars at 00:00 UTC.
TIMEFRAMES: dict[str, int] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


@dataclass(frozen=True)
class Candle:
    """One bar: `time` is the UTC moment it opens."""

    time: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
        }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def opened_at(ts_ms: int) -> datetime:
    """The UTC datetime of an epoch-milliseconds bar open, exactly (no float on the way)."""
    return _EPOCH + timedelta(milliseconds=ts_ms)
