"""A Wire for sessions without a socket: what they write is kept, and the test says when the client is behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson


class RecordingWire:
    def __init__(self) -> None:
        self.writes: list[bytes] = []  # each write's payload, as it would be framed
        self.framed: list[bytes | None] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.paused = False
        self.paused_at = 0.0
        self._on_drain: Callable[[], None] | None = None
        self.on_arrival: Callable[[str | bytes], bool] | None = None
        self._drained = asyncio.Event()
        self._drained.set()

    def write(self, payload: bytes, framed: bytes | None = None) -> None:
        assert self.close_code is None, "written after the close frame"
        self.writes.append(payload)
        self.framed.append(framed)

    def on_drain(self, callback: Callable[[], None]) -> None:
        self._on_drain = callback

    def on_message(self, callback: Callable[[str | bytes], bool]) -> None:
        self.on_arrival = callback

    async def drained(self) -> None:
        await self._drained.wait()

    def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    # the test's side

    def pause(self, ago: float = 0.0) -> None:
        """The client stopped reading `ago` seconds back."""
        self.paused, self.paused_at = True, time.monotonic() - ago
        self._drained.clear()

    def resume(self) -> None:
        self.paused = False
        self._drained.set()
        if self._on_drain is not None:
            self._on_drain()

    def arrive(self, raw: str) -> bool:
        """The client's message as the transport would offer it while the reader waits: True if it was taken."""
        assert self.on_arrival is not None, "no session reads from this wire yet"
        return self.on_arrival(raw)

    def messages(self) -> list[dict[str, Any]]:
        """Every message written so far, arrays unpacked, and forget them."""
        out: list[dict[str, Any]] = []
        for payload in self.writes:
            value = orjson.loads(payload)
            out.extend(value if isinstance(value, list) else [value])
        self.writes.clear()
        self.framed.clear()
        return out
