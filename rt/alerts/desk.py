"""What /v1/alert-hooks and POST /v1/alerts/{hook_id} do: hooks, and each alert from its body to an order."""

from __future__ import annotations

from rt.api.idempotency import Idempotency
from rt.auth.audit import AuditLog
from rt.auth.keys import KeyHasher
from rt.auth.limiter import Limiter
from rt.config import Settings
from rt.engine.engine import Engine
from rt.store import Store


class AlertDesk:
    def __init__(
        self,
        store: Store,
        engine: Engine,
        idempotency: Idempotency,
        limiter: Limiter,
        hasher: KeyHasher,
        audit: AuditLog,
        settings: Settings,
    ) -> None:
        self.store = store
        self.engine = engine
        self.idempotency = idempotency
        self.limiter = limiter
        self.hasher = hasher
        self.audit = audit
        self.settings = settings
