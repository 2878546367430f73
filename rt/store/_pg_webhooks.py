"""The webhooks part of the PostgreSQL twin: endpoints, the outbox of deliveries (filled by a trigger on events), claims and attempts."""

from __future__ import annotations

from rt.store import Webhooks
from rt.store._pg_base import Connections


class WebhookTables(Connections, Webhooks):
    pass
