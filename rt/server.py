"""Running the app under uvicorn, with a shutdown that tells WebSocket clients first."""

from __future__ import annotations

import gc
import ipaddress
import logging
import socket
import stat

import uvicorn
from starlette.applications import Starlette

from rt._http import with_head_deadline
from rt.config import Settings

log = logging.getLogger("rt.server")


class GracefulServer(uvicorn.Server):
    """Open WebSockets get `server.shutdown` and close 1001 before uvicorn closes connections."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        runtime = getattr(self._app.state, "runtime", None)
        if runtime is not None:
            await runtime.sessions.shutdown()
        await super().shutdown(sockets)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def startup_warnings(settings: Settings) -> list[str]:
    """What an operator must hear before the first client connects."""
    warnings = []
    if not _loopback(settings.host) and not settings.trusted_proxies:
        warnings.append(
            f"rt listens on {settings.host} and RT_TRUSTED_PROXIES is empty: without a TLS-terminating proxy in "
            "front, API keys, request signatures and WebSocket tokens cross the network in clear text"
        )
    try:
        mode = stat.S_IMODE(settings.data_path.stat().st_mode)
    except OSError:
        mode = 0  # not there yet: it is created 0700
    if mode & 0o077:
        warnings.append(
            f"the data dir {settings.data_path} is open to other users (mode {mode:04o}); "
            f"it holds the store and may hold the pepper and secret key: chmod 700 {settings.data_path}"
        )
    return warnings


def serve(app: Starlette, settings: Settings) -> None:
    for warning in startup_warnings(settings):
        log.warning(warning)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=with_head_deadline(settings.header_timeout_s),
        proxy_headers=False,  # X-Forwarded-For is believed only from RT_TRUSTED_PROXIES, by rt itself
        access_log=False,  # it would print query strings, which may hold WebSocket tokens
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=10,
        ws="websockets-sansio",
        ws_per_message_deflate=False,  # ticks are small; deflate doubles the CPU and memory per connection
        ws_max_size=64 * 1024,
        ws_ping_interval=20,
        ws_ping_timeout=20,
    )
    # Fewer, later collections: full passes over every connection's objects were the fan-out's worst pauses.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    GracefulServer(config, app).run()
