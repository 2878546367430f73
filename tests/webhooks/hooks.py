"""A webhook receiver in the test's own event loop: a real HTTP/1.1 server on 127.0.0.1 that answers each path from a
script (one reply per request, then a default) and records every request."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

REASONS = {200: "OK", 204: "No Content", 302: "Found", 410: "Gone", 429: "Too Many Requests", 500: "Server Error"}


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    hang: bool = False  # never answer: only the sender's timeout ends the request


OK = Reply()
HANG = Reply(hang=True)


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    at: float  # time.monotonic() when it arrived

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers["webhook-id"]


class Hooks:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._scripts: dict[str, tuple[deque[Reply], Reply]] = {}
        self._changed = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._stopping = asyncio.Event()
        self.port = 0

    async def __aenter__(self) -> Hooks:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        # Handlers end on their own (a cancelled one is reported by asyncio's stream callback): closed connections
        # end their reads, and a hanging reply is let go.
        self._stopping.set()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def answer(self, path: str, *replies: Reply, then: Reply = OK) -> None:
        self._scripts[path] = (deque(replies), then)

    def to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    async def wait(self, ready: Callable[[], bool], within: float = 10.0) -> None:
        """Until `ready()` holds after some request arrived (or holds already)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(ready)

    async def wait_count(self, path: str, n: int, within: float = 10.0) -> list[Request]:
        await self.wait(lambda: len(self.to(path)) >= n, within)
        return self.to(path)

    def _reply_for(self, path: str) -> Reply:
        replies, then = self._scripts.get(path, (deque(), OK))
        return replies.popleft() if replies else then

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                _, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                reply = self._reply_for(target)
                async with self._changed:
                    self.requests.append(Request(target, headers, body, time.monotonic()))
                    self._changed.notify_all()
                if reply.hang:
                    await self._stopping.wait()
                    return
                head = [f"HTTP/1.1 {reply.status} {REASONS.get(reply.status, 'Status')}"]
                head += [f"{k}: {v}" for k, v in {"Content-Length": str(len(reply.body)), **reply.headers}.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + reply.body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
