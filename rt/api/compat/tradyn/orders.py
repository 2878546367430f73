"""Tradyn orders (placeholder until its module lands)."""

from __future__ import annotations

from rt.api.routing import Operation

OPERATIONS: list[Operation] = []
