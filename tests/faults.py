"""Faults of the services rt depends on: a TCP proxy in front of PostgreSQL or Redis that a test cuts and restores.

The proxy runs on its own thread's event loop, so a test that drives `rt serve` in a subprocess (synchronously or
not) can cut the service away from it and give it back, without ever touching the machine's own service.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_CHUNK = 65536


class Proxy:
    """127.0.0.1:`port` forwards to `target`. cut() closes every connection and refuses new ones (the port is closed,
    as a server that went away); restore() listens on the same port again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0  # accepted so far: a test can tell its client went through the proxy

    # the test's side (any thread but the proxy's)

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._listen())

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # the proxy's loop

    async def _listen(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            _abort(writer)
        self._writers.clear()
        if server is not None:
            await server.wait_closed()  # every connection's pumps have ended

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_w)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
            self._writers.add(upstream_w)
            if self._server is None:  # cut while connecting
                return
            await asyncio.gather(_pump(client_r, upstream_w), _pump(upstream_r, client_w))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    self._writers.discard(writer)
                    _abort(writer)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    finally:
        _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close at once, as a lost connection does: no waiting for buffered data to drain."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


@contextlib.contextmanager
def proxy(target_host: str, target_port: int) -> Iterator[Proxy]:
    made = Proxy(target_host, target_port).start()
    try:
        yield made
    finally:
        made.close()
