"""Idempotent writes: the same key with the same request returns the first answer and trades once.

Keys are per account and kept 24 hours (as Stripe does). Successful answers and Cerberus rejections are kept;
other errors are not, so a retry after a 503 or 429 runs again. The kept answer is stored in the same transaction as
the orders, positions and events of the write (rt.engine.unit).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

from rt.engine.unit import atomic
from rt.errors import IDEMPOTENCY_CONFLICT, Conflict
from rt.records.trading import IdempotencyRecord, StoredResponse

if TYPE_CHECKING:
    from rt.engine.engine import Engine

log = logging.getLogger("rt.idempotency")

TTL_SECONDS = 24 * 3600
KEPT = frozenset({200, 201, 202, 422})


def fingerprint(command: str, params: dict[str, Any]) -> str:
    """What makes two requests "the same": the command and its parameters, whatever the transport, the spacing or
    the order of the keys. A REST route and its WebSocket twin name the same command (e.g. `order.place`)."""
    return hashlib.sha256(command.encode() + b"\n" + orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Idempotency:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._store = engine.store

    async def once(
        self, account_id: str, key: str, print_: str, produce: Callable[[], Awaitable[tuple[int, bytes]]]
    ) -> tuple[int, bytes, bool]:
        """(status, body, replayed): the stored answer for this key, or produce() run once and kept."""
        # The account's writer lock (held by every process on the store alike) is taken before the key is looked up:
        # the same key sent to several instances at once runs once, and the others find its answer. The answer
        # commits with what the write changed: a crash leaves both or neither, never a trade whose retry trades again.
        async with atomic(self._store) as unit:
            await self._engine.hold(account_id)
            stored = await (await unit.writing()).get_response(account_id, key)
            if stored is not None:
                if stored.fingerprint != print_:
                    raise Conflict(
                        "this Idempotency-Key (or client_order_id) was used with a different request",
                        code=IDEMPOTENCY_CONFLICT,
                    )
                return stored.status, stored.body, True
            status, body = await produce()
            if status in KEPT:
                unit.keep(IdempotencyRecord(account_id, key, StoredResponse(print_, status, body)))
        return status, body, False

    async def run(self, account_id: str, key: str, print_: str, produce: Callable[[], Awaitable[Response]]) -> Response:
        """once() for a REST route."""
        fresh: list[Response] = []

        async def as_pair() -> tuple[int, bytes]:
            response = await produce()
            fresh.append(response)
            return response.status_code, bytes(response.body)

        status, body, replayed = await self.once(account_id, key, print_, as_pair)
        if not replayed:
            return fresh[0]
        return Response(body, status, media_type=_media(status), headers={"Idempotent-Replayed": "true"})

    async def run_expiry(self) -> None:
        while True:
            try:
                await self._store.expire_responses(int((time.time() - TTL_SECONDS) * 1000))
            except Exception:
                log.exception("idempotency expiry failed")
            await asyncio.sleep(3600)


def _media(status: int) -> str:
    return "application/json" if status < 400 else "application/problem+json"
