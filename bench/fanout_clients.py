"""The fan-out benchmark's load generator: client processes, each its own event loop, pinned to the load core.

A process opens its share of the connections (picows, the `websockets` client, or a minimal frame parser), tells
the parent how many are up, and counts over the window the parent sends back the events received and their latency
(receive time - the event's `ts`, both epoch µs on this machine). The first `stuck` connections of a plan stop
reading when the window opens and read again `stuck_s` later (picows_client.Stuck).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import resource
import time
from array import array
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeVar
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.picows_client import PicowsClient, Stuck, subscribed

CHANNEL = "ticks:BTC/USDT"
SUBSCRIBE = b'{"op":"subscribe","channel":"' + CHANNEL.encode() + b'","id":1}'
T = TypeVar("T")


def now_us() -> int:
    return time.time_ns() // 1000


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


@dataclass(frozen=True)
class Plan:
    """What one client process does."""

    urls: list[str]
    kind: str  # "picows", "websockets" or "raw"
    compression: str | None
    subscribe: bool
    cpu: int | None
    stuck: int = 0  # the first `stuck` URLs are clients that stop reading when the window opens
    stuck_s: float = 8.0
    drain_s: float = 5.0
    sample: int = 1  # every sample-th connection parses its events for latency and seq; the others count them


class Window:
    """Events received while start <= now < end are counted; the parent sets it once every client is connected."""

    def __init__(self) -> None:
        self.start = 1 << 62
        self.end = 1 << 62


@dataclass
class Tally:
    """What one client process saw inside the window, over all its connections."""

    window: Window
    events: int = 0
    frames: int = 0
    gaps: int = 0
    seq_first: int = 1 << 62
    seq_last: int = 0
    measured_events: int = 0  # of `events`, those of the measured streams
    measured_streams: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    latencies: array[int] = field(default_factory=lambda: array("q"))


class Stream:
    """One connection's count: every text frame goes through text(); fold() adds it to the process's tally."""

    __slots__ = ("count", "first", "last", "tally")

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.first = self.last = self.count = 0

    def text(self, raw: bytes, now: int) -> None:
        window = self.tally.window
        if not window.start <= now < window.end:
            return
        self.tally.frames += 1
        message = orjson.loads(raw)
        for m in message if isinstance(message, list) else (message,):
            if m.get("type") == "event":
                self.tally.latencies.append(now - m["ts"])
                self.last = m["seq"]
                self.first = self.first or self.last
                self.count += 1

    def closed(self, code: int | str) -> None:
        self.tally.closes[str(code)] += 1

    def fold(self) -> None:
        tally = self.tally
        tally.measured_streams += 1
        if self.count:
            tally.events += self.count
            tally.measured_events += self.count
            tally.gaps += self.last - self.first + 1 - self.count
            tally.seq_first = min(tally.seq_first, self.first)
            tally.seq_last = max(tally.seq_last, self.last)
            self.count = 0


class Counted(Stream):
    """A connection whose events are counted, not parsed: the load generator's core goes to receiving them.

    Latency and missed ticks come from the measured streams (every `sample`-th connection); a measured and a
    counted connection receive the same events, which the parent checks.
    """

    __slots__ = ()

    def text(self, raw: bytes, now: int) -> None:
        window = self.tally.window
        if window.start <= now < window.end:
            self.tally.frames += 1
            self.count += raw.count(b'"type":"event"')

    def fold(self) -> None:
        self.tally.events += self.count
        self.count = 0


class WebsocketsClient:
    """The `websockets` asyncio client, as an application would use it."""

    def __init__(self, stream: Stream, compression: str | None) -> None:
        self.stream = stream
        self.compression = compression
        self.extensions: list[str] = []
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self, url: str, subscribe: bool) -> None:
        ws = self._ws = await connect(
            url, compression=self.compression, proxy=None, ping_interval=None, max_size=2**22, open_timeout=60
        )
        self.extensions = [type(x).__name__ for x in ws.protocol.extensions]
        if subscribe:
            await ws.send(SUBSCRIBE, text=True)
            while not subscribed(await ws.recv(decode=False)):
                pass
        self._reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: ClientConnection) -> None:
        text = self.stream.text
        try:
            while True:
                raw = await ws.recv(decode=False)
                text(raw, time.time_ns() // 1000)
        except ConnectionClosed as exc:
            self.stream.closed(exc.rcvd.code if exc.rcvd else "no close frame")

    def abort(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            self._ws.transport.abort()


class RawClient(asyncio.Protocol):
    """A minimal RFC 6455 client for the load generator: no extensions, answers pings, parses frames in place.

    It costs a few µs per frame where the `websockets` client costs tens, so on a shared 2-core box it leaves the
    CPU to the server under test.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.extensions: list[str] = []
        self._buf = bytearray()
        self._upgraded = False
        self._subscribed: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    async def open(self, url: str, subscribe: bool) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = parts.path + ("?" + parts.query if parts.query else "")
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        assert self.transport is not None
        self.transport.write(request.encode())
        await asyncio.wait_for(self._opened, 60)
        if subscribe:
            self._subscribed = loop.create_future()
            self._send(0x1, SUBSCRIBE)
            await asyncio.wait_for(self._subscribed, 60)
            self._subscribed = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self._opened, self._subscribed):
            if future is not None and not future.done():
                future.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        now = time.time_ns() // 1000
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                self._opened.set_exception(ConnectionError(f"handshake refused: {bytes(buf[:end])[:300]!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            del buf[: end + 4]
            self._upgraded = True
            self._opened.set_result(None)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            opcode, length, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            if opcode == 0x1:
                self._text(payload, now)
            elif opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                self.stream.closed(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005)
                self._send(0x8, payload[:2])
                assert self.transport is not None
                self.transport.close()
        del buf[:pos]

    def _text(self, payload: bytes, now: int) -> None:
        if self._subscribed is not None:
            try:
                if subscribed(payload):
                    self._subscribed.set_result(None)
            except RuntimeError as exc:
                self._subscribed.set_exception(exc)
            return
        self.stream.text(payload, now)

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        n = len(payload)
        header = bytes([0x80 | opcode, 0x80 | n]) if n < 126 else bytes([0x80 | opcode, 0xFE]) + n.to_bytes(2, "big")
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(header + mask + masked)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


Client = PicowsClient | WebsocketsClient | RawClient


def make_client(kind: str, stream: Stream, compression: str | None) -> Client:
    if kind == "picows":
        return PicowsClient(stream.text, stream.closed)
    if kind == "raw":
        return RawClient(stream)
    return WebsocketsClient(stream, compression)


async def open_client(client: Client, url: str, subscribe: bool) -> None:
    if isinstance(client, PicowsClient):
        await client.open(url, SUBSCRIBE if subscribe else None)
    else:
        await client.open(url, subscribe)


async def _stuck_clients(window: Window, stuck: list[Stuck], plan: Plan) -> None:
    """Stop reading at the window's start, watch the sockets, read again `stuck_s` later, wait `drain_s`."""
    if not stuck:
        return
    await asyncio.sleep(max(0.0, (window.start - now_us()) / 1e6))
    for s in stuck:
        s.stop()
    resume_at = now_us() + int(plan.stuck_s * 1e6)
    while now_us() < resume_at:
        for s in stuck:
            s.poll()
        await asyncio.sleep(0.05)
    for s in stuck:
        s.resume()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(s.client.gone.wait() for s in stuck)), plan.drain_s)


async def _clients(pipe: Connection, plan: Plan) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(50)
    window = Window()
    tally = Tally(window)
    streams: list[Stream] = []
    stuck = [Stuck() for _ in plan.urls[: plan.stuck]]

    async def open_one(i: int, url: str) -> Client:
        stream = Stream(tally) if i % plan.sample == 0 else Counted(tally)
        client = make_client(plan.kind, stream, plan.compression)
        async with gate:
            try:
                await open_client(client, url, plan.subscribe)
            except BaseException:
                client.abort()
                raise
        streams.append(stream)
        return client

    async def open_stuck(s: Stuck, url: str) -> None:
        async with gate:
            await s.client.open(url, SUBSCRIBE)

    await asyncio.gather(*(open_stuck(s, url) for s, url in zip(stuck, plan.urls, strict=False)))
    opened = await asyncio.gather(
        *(open_one(i, u) for i, u in enumerate(plan.urls[plan.stuck :])), return_exceptions=True
    )
    clients = [c for c in opened if isinstance(c, PicowsClient | WebsocketsClient | RawClient)]
    errors = Counter(f"{type(e).__name__}: {e}"[:160] for e in opened if isinstance(e, BaseException))
    extensions = sorted({x for c in clients for x in c.extensions})
    pipe.send({"connected": len(clients), "errors": dict(errors), "extensions": extensions})
    window.start, window.end = await loop.run_in_executor(None, pipe.recv)
    watching = asyncio.create_task(_stuck_clients(window, stuck, plan))
    await asyncio.sleep(max(0.0, (window.start - now_us()) / 1e6))
    user0, sys0 = resource.getrusage(resource.RUSAGE_SELF)[:2]
    await asyncio.sleep(max(0.0, (window.end - now_us()) / 1e6))
    user1, sys1 = resource.getrusage(resource.RUSAGE_SELF)[:2]
    await watching
    for stream in streams:
        stream.fold()
    pipe.send(
        {
            "events": tally.events,
            "frames": tally.frames,
            "gaps": tally.gaps,
            "seq_first": tally.seq_first,
            "seq_last": tally.seq_last,
            "measured_events": tally.measured_events,
            "measured_streams": tally.measured_streams,
            "closes": dict(tally.closes),
            "cpu_s": user1 - user0 + sys1 - sys0,
            "cpu_sys_s": sys1 - sys0,
            "latencies": tally.latencies.tobytes(),
            "stuck": [s.report() for s in stuck],
        }
    )
    await loop.run_in_executor(None, pipe.recv)  # hold the connections until the parent has read the server
    for client in clients:
        client.abort()
    for s in stuck:
        s.client.abort()


def client_process(pipe: Connection, plan: Plan) -> None:
    pin(plan.cpu)
    raise_nofile()
    run_loop(_clients(pipe, plan))
