"""Receiver: a real HTTP/1.1 server on 127.0.0.1 that a test scripts and reads, to receive webhook deliveries.

It runs its own event loop in a thread, so synchronous and asynchronous tests (and the bench) drive it alike. Each
path answers from a script (`answer`): replies taken one per request, then a default; a reply may be slow, hang
until the sender gives up, or carry any status and headers (Retry-After, Location). `down()` closes the listening
socket and every connection (the sender then sees "connection refused"); `up()` listens on the same port again.
Every request is recorded with its headers, body and arrival time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.e2e.server import free_port

REASONS = {200: "OK", 204: "No Content", 302: "Found", 410: "Gone", 429: "Too Many Requests", 500: "Server Error"}


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hang: bool = False  # never answer: the sender's timeout ends the request


OK = Reply()
HANG = Reply(hang=True)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.time() when the whole body had arrived

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class _Script:
    replies: deque[Reply]
    then: Reply


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._scripts: dict[str, _Script] = {}
        self._requests: list[Request] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"receiver-{self.port}", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    # control (any thread)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *replies: Reply, then: Reply = OK) -> None:
        """`path` answers `replies` in turn, one per request, then `then` for every later one."""
        with self._changed:
            self._scripts[path] = _Script(deque(replies), then)

    def start(self) -> Receiver:
        self._thread.start()
        self.up()
        return self

    def up(self) -> None:
        self._call(self._listen())

    def down(self) -> None:
        """Stop listening and drop every connection: a sender sees the connection refused."""
        self._call(self._close())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        if not self._loop.is_running():
            self._loop.close()

    def requests(self, path: str | None = None) -> list[Request]:
        with self._changed:
            return [r for r in self._requests if path is None or r.path == path]

    def wait_for(
        self, done: Callable[[list[Request]], bool], timeout: float = 30.0, path: str | None = None
    ) -> list[Request]:
        """Wait until `done(requests of path)` holds; the requests then. AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                seen = [r for r in self._requests if path is None or r.path == path]
                if done(seen):
                    return seen
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"receiver: condition not met within {timeout} s; {len(seen)} requests")
                self._changed.wait(left)

    def wait_count(self, count: int, timeout: float = 30.0, path: str | None = None) -> list[Request]:
        return self.wait_for(lambda seen: len(seen) >= count, timeout, path)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    # the server (its own loop)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.gather(*self._handlers, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass  # a cancel is ours (down, stop): ending quietly keeps asyncio from reporting the handler
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.transport.abort()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await reader.readline()
        if not line:
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await _chunked(reader)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0")))
        path = target.split("?", 1)[0]
        with self._changed:
            self._requests.append(Request(method, path, headers, body, time.time()))
            script = self._scripts.get(path)
            reply = (script.replies.popleft() if script.replies else script.then) if script else OK
            self._changed.notify_all()
        if reply.hang:
            await reader.read(1)  # until the sender gives up and closes
            return False
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        head = [f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}", f"Content-Length: {len(reply.body)}"]
        head += [f"{k}: {v}" for k, v in reply.headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + reply.body)
        await writer.drain()
        return headers.get("connection", "").lower() != "close"


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readline()).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readline()
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readline()


@contextlib.contextmanager
def receiving(port: int | None = None) -> Iterator[Receiver]:
    receiver = Receiver(port).start()
    try:
        yield receiver
    finally:
        receiver.stop()
