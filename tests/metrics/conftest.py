"""The engine tests' in-process trading core, and a registry that reads the instruments alone."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from rt.metrics import INSTRUMENTS
from tests.engine.conftest import make_rig, rig

__all__ = ["Samples", "make_rig", "rig"]


class Samples:
    """The instruments' values; counts are process-wide, so tests compare with what they were before."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        for instrument in INSTRUMENTS:
            self.registry.register(instrument)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0
