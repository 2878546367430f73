"""The alerts part of the PostgreSQL twin: inbound alert hooks and the log of what they received."""

from __future__ import annotations

from rt.store import AlertHooks
from rt.store._pg_base import Connections


class AlertTables(Connections, AlertHooks):
    pass
