"""The alerts part of the SQLite twin: inbound alert hooks and the log of what they received."""

from __future__ import annotations

from rt.store import AlertHooks
from rt.store._sqlite_base import Connections


class AlertTables(Connections, AlertHooks):
    pass
