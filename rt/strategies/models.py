"""Moved to rt.records.strategies."""

from rt.records.strategies import StrategyRecord as StrategyRecord
from rt.records.strategies import StrategyStatus as StrategyStatus
