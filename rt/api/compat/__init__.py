"""Compatibility dialects: the seeds' own clients, unchanged, over the same engine, scopes, limits and Cerberus.

Each dialect is a `Dialect` (rt.api.routing) for its keys, bodies and errors, and a table of operations whose handlers
call the engine functions the native routes call. docs/compat.md maps their fields to rt's.
"""

from __future__ import annotations

from rt.api.compat import draconis, kraken, tradyn
from rt.api.routing import Operation

OPERATIONS: list[Operation] = [*tradyn.OPERATIONS, *draconis.OPERATIONS, *kraken.OPERATIONS]
