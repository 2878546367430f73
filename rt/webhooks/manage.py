"""What the /v1/webhooks routes and `rt webhooks` do: endpoints, secrets and their rotation, tests and redelivery;
and the delivery worker this process runs."""

from __future__ import annotations

from rt.auth.vault import Box
from rt.bus import Bus
from rt.config import Settings
from rt.engine.engine import Engine
from rt.store import Store


class WebhookManager:
    def __init__(self, store: Store, box: Box, bus: Bus, engine: Engine, settings: Settings, instance: str) -> None:
        self.store = store
        self.box = box
        self.bus = bus
        self.engine = engine
        self.settings = settings
        self.instance = instance

    async def run(self) -> None:
        """Deliver the outbox until cancelled."""

    async def close(self) -> None:
        """Stop delivering; hand back every claim of this instance so another (or the next start) sends them."""
