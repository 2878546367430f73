"""In-process twin of the token store."""

from __future__ import annotations

import time

from rt.auth.principal import Principal
from rt.auth.tokens import TOKEN_TTL, new_token

_SWEEP_AT = 10_000


class MemoryTokens:
    def __init__(self) -> None:
        self._tokens: dict[str, tuple[Principal, float]] = {}

    async def issue(self, principal: Principal, ttl: int = TOKEN_TTL) -> str:
        if len(self._tokens) >= _SWEEP_AT:
            now = time.monotonic()
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
        token = new_token()
        self._tokens[token] = (principal, time.monotonic() + ttl)
        return token

    async def consume(self, token: str) -> Principal | None:
        entry = self._tokens.pop(token, None)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    async def close(self) -> None:
        return None
