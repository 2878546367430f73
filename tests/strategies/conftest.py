"""The strategy tests run on the engine's in-process rig."""

from tests.engine.conftest import make_rig, rig

__all__ = ["make_rig", "rig"]
