"""The scrape port: GET /metrics on 127.0.0.1 (off the public port), anything else 404."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest

from rt.metrics.registry import registry

if TYPE_CHECKING:
    from rt.runtime import Runtime

log = logging.getLogger("rt.metrics")

# The text format every Prometheus reads; names are plain ASCII, so nothing needs the newer 1.0.0 escaping.
TEXT_FORMAT = b"text/plain; version=0.0.4; charset=utf-8"


def _response(collected: CollectorRegistry, request: bytes) -> bytes:
    parts = request.split(b" ", 2)
    path = parts[1].split(b"?", 1)[0] if len(parts) == 3 else b""
    body, status, kind = b"not found\n", b"404 Not Found", b"text/plain; charset=utf-8"
    if parts[0] in (b"GET", b"HEAD") and path == b"/metrics":
        try:
            # Collected on the event loop, so the sessions and the hub are read between two of their own steps.
            body, status, kind = generate_latest(collected), b"200 OK", TEXT_FORMAT
        except Exception:
            log.exception("metrics collection failed")
            body, status = b"metrics collection failed\n", b"500 Internal Server Error"
    head = (
        b"HTTP/1.1 "
        + status
        + b"\r\nContent-Type: "
        + kind
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
    )
    return head if parts[0] == b"HEAD" else head + body


async def serve(runtime: Runtime, port: int) -> None:
    """Serve this runtime's registry until cancelled."""
    collected = registry(runtime)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            writer.write(_response(collected, request))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    log.info("metrics listening", extra={"port": port})
    try:
        await asyncio.Event().wait()
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
