"""What every Redis twin shares: closing a client without waiting on its socket for ever."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("rt.redis")

CLOSE_S = 1.0


async def close_quietly(*clients: Any, within: float = CLOSE_S) -> None:
    """`aclose()` each client (a Redis client or a PubSub), in order, each given `within` seconds.

    redis-py waits for the socket's close with no bound (redis/redis-py#3941); a shutdown, or a subscription being
    set up again, must not wait on it. A client that does not close in time is let go: its socket goes with the
    process or the garbage collector."""
    for client in clients:
        try:
            async with asyncio.timeout(within):
                await client.aclose()
        except TimeoutError:
            log.warning("redis connection did not close in time; let go", extra={"within_s": within})
        except Exception as exc:  # a connection that broke already has nothing left to close
            log.debug("redis connection closed with an error", extra={"error": str(exc)})
