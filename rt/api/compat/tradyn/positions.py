"""Tradyn positions (placeholder)."""

from __future__ import annotations

from rt.api.routing import Operation

OPERATIONS: list[Operation] = []
