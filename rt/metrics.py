"""Prometheus metrics, served on 127.0.0.1:RT_METRICS_PORT (off the public port)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rt.runtime import Runtime

log = logging.getLogger("rt.metrics")


def render(runtime: Runtime) -> str:
    from rt.session.manager import LATENCY_BUCKETS_MS

    sessions = runtime.sessions
    hub = runtime.hub
    lines = [
        "# HELP rt_ws_connections Open WebSocket sessions.",
        "# TYPE rt_ws_connections gauge",
        f"rt_ws_connections {sessions.count()}",
        "# HELP rt_ws_connections_accepted_total WebSocket sessions accepted.",
        "# TYPE rt_ws_connections_accepted_total counter",
        f"rt_ws_connections_accepted_total {sessions.accepted}",
        "# HELP rt_ws_subscriptions Channel subscriptions of open sessions.",
        "# TYPE rt_ws_subscriptions gauge",
        f"rt_ws_subscriptions {hub.subscriptions()}",
        "# HELP rt_events_fanned_out_total Event messages handed to session queues.",
        "# TYPE rt_events_fanned_out_total counter",
        f"rt_events_fanned_out_total {hub.fanned_out}",
        "# HELP rt_ws_queue_depth Messages waiting in all session send queues.",
        "# TYPE rt_ws_queue_depth gauge",
        f"rt_ws_queue_depth {sum(s.queue_depth for s in sessions.all())}",
        "# HELP rt_ws_slow_consumer_closes_total Sessions closed with 4008.",
        "# TYPE rt_ws_slow_consumer_closes_total counter",
        f"rt_ws_slow_consumer_closes_total {sessions.slow_consumer_closes}",
        "# HELP rt_ws_command_latency_ms WebSocket command latency, time_in to time_out.",
        "# TYPE rt_ws_command_latency_ms histogram",
    ]
    cumulative = 0
    for bound, count in zip(LATENCY_BUCKETS_MS, sessions.latency_counts, strict=False):
        cumulative += count
        lines.append(f'rt_ws_command_latency_ms_bucket{{le="{bound}"}} {cumulative}')
    lines.append(f'rt_ws_command_latency_ms_bucket{{le="+Inf"}} {sessions.commands}')
    lines.append(f"rt_ws_command_latency_ms_sum {sessions.latency_sum_ms:.3f}")
    lines.append(f"rt_ws_command_latency_ms_count {sessions.commands}")
    return "\n".join(lines) + "\n"


async def serve(runtime: Runtime, port: int) -> None:
    """A minimal HTTP responder: GET /metrics, anything else 404. Runs until cancelled."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path == b"/metrics":
                body, status = render(runtime).encode(), b"200 OK"
            else:
                body, status = b"not found\n", b"404 Not Found"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; version=0.0.4\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
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
