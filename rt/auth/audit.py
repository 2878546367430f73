"""The audit log: every auth failure and key change, per account. Failures are buffered and written in batches."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from datetime import UTC, datetime
from typing import Any

from rt.records.accounts import AuditEntry
from rt.store import Audit

log = logging.getLogger("rt.audit")

KEY_CREATED = "key.created"
KEY_REVOKED = "key.revoked"
KEY_ROTATED = "key.rotated"
AUTH_FAILED = "auth.failed"
ACCOUNT_CREATED = "account.created"

_MAX_PENDING = 10_000


class AuditLog:
    def __init__(self, store: Audit, flush_every: float = 0.5) -> None:
        self._store = store
        self._pending: deque[AuditEntry] = deque(maxlen=_MAX_PENDING)
        self._dropped = 0
        self._flush_every = flush_every

    async def write(
        self, action: str, *, account_id: str | None, key_id: str | None = None, ip: str | None = None, **detail: Any
    ) -> None:
        """Write now: for key changes, which must not be lost."""
        await self._store.add_audit([self._entry(action, account_id, key_id, ip, detail)])

    def record(
        self, action: str, *, account_id: str | None, key_id: str | None = None, ip: str | None = None, **detail: Any
    ) -> None:
        """Queue for the next batch: for auth failures, which may come in floods."""
        if len(self._pending) == self._pending.maxlen:
            self._dropped += 1
        self._pending.append(self._entry(action, account_id, key_id, ip, detail))

    @staticmethod
    def _entry(
        action: str, account_id: str | None, key_id: str | None, ip: str | None, detail: dict[str, Any]
    ) -> AuditEntry:
        return AuditEntry(
            action=action, account_id=account_id, key_id=key_id, ip=ip, detail=detail, at=datetime.now(UTC)
        )

    async def flush(self) -> None:
        if self._dropped:
            log.warning("audit buffer overflowed", extra={"dropped": self._dropped})
            self._dropped = 0
        batch = list(self._pending)
        self._pending.clear()
        if batch:
            await self._store.add_audit(batch)

    async def run(self) -> None:
        """Flush forever; the lifespan cancels this and calls flush() once more."""
        while True:
            await asyncio.sleep(self._flush_every)
            try:
                await self.flush()
            except Exception:
                log.exception("audit flush failed")
