"""Moved to rt.records.trading."""

from rt.records.trading import ZERO as ZERO
from rt.records.trading import Book as Book
from rt.records.trading import Envelope as Envelope
from rt.records.trading import IdempotencyRecord as IdempotencyRecord
from rt.records.trading import Intent as Intent
from rt.records.trading import Order as Order
from rt.records.trading import OrderStatus as OrderStatus
from rt.records.trading import Position as Position
from rt.records.trading import PositionSide as PositionSide
from rt.records.trading import PositionStatus as PositionStatus
from rt.records.trading import StoredResponse as StoredResponse
from rt.records.trading import TradeBatch as TradeBatch
from rt.records.trading import TradingState as TradingState
from rt.records.trading import now as now
