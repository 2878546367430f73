"""How a session's frames reach its client: straight to the transport, or through ASGI `send`.

Under `rt serve`, uvicorn runs `RtWebSocketProtocol` (rt/server.py names it by import string): uvicorn and Starlette
keep the handshake, and once the socket is accepted the session writes pre-framed bytes to the transport itself,
synchronously, from the hub's fan-out. The transport says when its buffer passes the high-water mark
(`pause_writing`) and when it drained (`resume_writing`); the session queues only while it is paused.

A session closes the socket with `Wire.close`: the close frame goes to the transport at once (what was still queued
in the session is dropped, never sent ahead of it), and the TCP connection is aborted when the client has not
answered the close within `CLOSE_TIMEOUT_S`, so a client that stopped reading pins no buffer.

Under any other ASGI server the session gets `AsgiWire`, which emulates the same contract over `send` with one
writer task.

An idle connection is mostly its bookkeeping, so the protocol keeps little: one list and one waiter for what the
client sends (uvicorn's asyncio.Queue and Event hold five deques, about 3 KiB), and neither the handshake's request
nor its headers once the socket is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import Send
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import Protocol as FrameParser
from websockets.streams import StreamReader

from rt.session.frames import text_frame

WIRE = "rt.wire"  # the scope extension that hands the session its transport
HIGH_WATER = 64 * 1024  # bytes the transport may buffer before the session queues instead
LOW_WATER = 16 * 1024
SEND_BUFFER = 256 * 1024  # the kernel's send buffer per connection
CLOSE_TIMEOUT_S = 3.0  # after the close frame, how long the client has to answer it before the connection is cut


class Wire(Protocol):
    """A session's way out."""

    paused: bool  # the client is behind: the transport's buffer is over its high-water mark
    paused_at: float  # time.monotonic() when it last paused

    def write(self, payload: bytes, framed: bytes | None = None) -> None:
        """Send one text message; `framed` is the same message already framed, to be written as it is."""

    def on_drain(self, callback: Callable[[], None]) -> None:
        """Call `callback` each time a paused transport drains below its low-water mark."""

    def on_message(self, callback: Callable[[str | bytes], bool]) -> None:
        """Offer `callback` each message the client sends while the session's reader waits for one, as it arrives;
        what it declines (returns False) goes to the reader. A wire that cannot offer them never calls it."""

    async def drained(self) -> None:
        """Return once the transport is not paused (at once when it is not, or when the connection is gone)."""

    def close(self, code: int, reason: str) -> None:
        """Send the close frame now and end the connection, cutting it if the client does not answer in time."""

    @property
    def closed(self) -> bool:
        """The close frame was sent, or the connection is gone: nothing more can be written."""


class TransportWire:
    """The fast path: frames written to the uvicorn connection's transport."""

    __slots__ = ("_on_drain", "_protocol", "_transport", "paused", "paused_at")

    def __init__(self, protocol: RtWebSocketProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self._on_drain: Callable[[], None] | None = None
        self.paused = False
        self.paused_at = 0.0

    def write(self, payload: bytes, framed: bytes | None = None) -> None:
        if self._protocol.close_sent or self._transport.is_closing():
            return
        self._transport.write(framed if framed is not None else text_frame(payload))

    def on_drain(self, callback: Callable[[], None]) -> None:
        self._on_drain = callback

    def on_message(self, callback: Callable[[str | bytes], bool]) -> None:
        self._protocol.on_message = callback

    async def drained(self) -> None:
        await self._protocol.writable.wait()

    def close(self, code: int, reason: str) -> None:
        self._protocol.close_now(code, reason)

    @property
    def closed(self) -> bool:
        return self._protocol.close_sent or self._transport.is_closing()

    # the transport's side

    def _paused(self) -> None:
        self.paused = True
        self.paused_at = time.monotonic()

    def _resumed(self) -> None:
        self.paused = False
        if self._on_drain is not None:
            self._on_drain()


class Inbox:
    """What the client sent, for the one task that reads it: uvicorn's receive queue, in a list and one future."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []  # uvicorn stops reading the socket while one message waits: a short list
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    @property
    def awaited(self) -> bool:
        """Its reader waits for the next message and none is queued."""
        return self._waiter is not None and not self._items


class Flag:
    """asyncio.Event's set, clear and wait for one connection's writability, without a deque of waiters."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter


class RtWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websockets protocol, handing the accepted socket's transport to the session (the `rt.wire`
    scope extension), with a close that cuts a client that does not answer it."""

    wire: TransportWire | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inbox = Inbox()
        self.queue = self.inbox  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.on_message: Callable[[str | bytes], bool] | None = None

    def send_receive_event_to_app(self) -> None:
        """A whole message from the client. While the session's reader waits for one it is offered to the session
        there and then: a command starts a turn of the loop sooner than through the reader's wake-up, under a
        fan-out a few tenths of a millisecond. Anything else, or what the session declines, goes to uvicorn's
        queue (which pauses reading until the reader takes it)."""
        on_message = self.on_message
        if on_message is not None and not self.close_sent and self.inbox.awaited:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            message: str | bytes | None = data
            if self.curr_msg_data_type == "text":
                try:
                    message = data.decode()
                except UnicodeDecodeError:
                    message = None  # uvicorn closes with 1007
            if message is not None and on_message(message):
                self.frames = []
                return
        super().send_receive_event_to_app()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # The kernel's send buffer, fixed: autotuned it grows to megabytes, which a client that stopped reading
            # pins, and which hide it from the high-water mark for minutes. 256 KiB still carries 2.5 MB/s at 100 ms.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER // 2)  # Linux doubles it

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            self.wire = TransportWire(self)
            scope["extensions"][WIRE] = self.wire

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            self._forget_handshake()

    def _forget_handshake(self) -> None:
        """A connection may stay open for days: what only its handshake needed goes."""
        self.request = self.response = None  # type: ignore[assignment]
        self.scope["headers"] = []
        # websockets' server parser keeps the handshake's request (and its headers) alive in its generator for as
        # long as the connection lives. Where it waits at a frame boundary, a frame parser of its own takes over:
        # the same frame parsing, without the request.
        parser = self.conn.parser
        frames = getattr(parser, "gi_yieldfrom", None)
        waiting = getattr(frames, "gi_yieldfrom", None)
        if getattr(waiting, "gi_code", None) is StreamReader.at_eof.__code__ and not self.conn.reader.buffer:
            parser.close()
            self.conn.parser = FrameParser.parse(self.conn)
            next(self.conn.parser)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.wire is not None:
            self.wire._paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.wire is not None:
            self.wire._resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.wire is not None:
            self.wire.paused = False

    def close_now(self, code: int, reason: str) -> None:
        """The close frame ahead of anything the session still had queued; the connection cut after
        CLOSE_TIMEOUT_S without the client's answer (a client that stopped reading never gives one)."""
        if self.close_sent or self.transport.is_closing():
            self._cut_later()  # closed by uvicorn itself (a keepalive timeout, a shutdown): cut it all the same
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        with contextlib.suppress(InvalidState):
            self.conn.send_close(code, reason)
            self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, self._cut)

    def _cut(self) -> None:
        """Reset the connection: what the kernel still holds for the client is dropped at once (an abort alone
        leaves it to the kernel, which keeps the socket and its buffers while it retries a client that reads
        nothing)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _cut_later(self) -> None:
        if self.close_timer is None and not self.disconnected:
            self.close_timer = self.loop.call_later(CLOSE_TIMEOUT_S, self._cut)

    def keepalive_timeout(self) -> None:
        """No pong in time: closed as uvicorn does (1011), but the session is told and the connection is cut when
        the close is not answered, where uvicorn's transport.close() waits on a buffer that never drains."""
        self.pong_timer = None
        self.pending_ping_payload = None
        self.close_now(1011, "keepalive ping timeout")

    def shutdown(self) -> None:
        """The server stops: an accepted socket gets its close (1012) or keeps the one it has, and is cut
        CLOSE_TIMEOUT_S later if the client does not answer, never held for the whole graceful-shutdown timeout."""
        if not self.handshake_complete:
            super().shutdown()
            return
        self.stop_keepalive()
        self.close_now(1012, "service restart")

    def handle_close(self, event: Any) -> None:
        if self.close_sent and self.close_timer is not None:
            # The client answered our close: the closing handshake is complete, the rest can be flushed.
            self.close_timer.cancel()
            self.close_timer = None
            self.transport.close()
            return
        super().handle_close(event)


class AsgiWire:
    """The same contract over ASGI `send` (another server than `rt serve`'s uvicorn): one writer task sends what is
    buffered; "paused" is more than `high` messages waiting."""

    def __init__(self, send: Send, high: int = 64) -> None:
        self._send = send
        self._buffer: deque[bytes] = deque()
        self._high = high
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_drain: Callable[[], None] | None = None
        self._close: tuple[int, str] | None = None
        self._gone = False
        self.paused = False
        self.paused_at = 0.0
        loop = asyncio.get_running_loop()
        self._owner = asyncio.current_task()  # the connection's task, reading what the client sends
        self._cut: asyncio.TimerHandle | None = None
        self._task = loop.create_task(self._writer(), name="ws-writer")

    def write(self, payload: bytes, framed: bytes | None = None) -> None:
        if self.closed:
            return
        self._buffer.append(payload)
        if len(self._buffer) > self._high and not self.paused:
            self.paused, self.paused_at = True, time.monotonic()
            self._idle.clear()
        self._wake.set()

    def on_drain(self, callback: Callable[[], None]) -> None:
        self._on_drain = callback

    def on_message(self, callback: Callable[[str | bytes], bool]) -> None:
        """Messages come through ASGI `receive` alone."""

    async def drained(self) -> None:
        await self._idle.wait()

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self._buffer.clear()
        self._close = (code, reason)
        self._wake.set()
        # A server that cannot tell this session the client is gone: its task ends after CLOSE_TIMEOUT_S.
        self._cut = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT_S, self._give_up)

    def _give_up(self) -> None:
        self._gone = True
        self._task.cancel()
        if self._owner is not None:
            self._owner.cancel()

    @property
    def closed(self) -> bool:
        return self._close is not None or self._gone

    async def _writer(self) -> None:
        try:
            while True:
                while self._buffer and self._close is None:
                    await self._send({"type": "websocket.send", "text": self._buffer.popleft().decode()})
                    if self.paused and len(self._buffer) <= self._high // 4:
                        self.paused = False
                        self._idle.set()
                        if self._on_drain is not None:
                            self._on_drain()
                if self._close is not None:
                    code, reason = self._close
                    await self._send({"type": "websocket.close", "code": code, "reason": reason})
                    return
                self._wake.clear()
                await self._wake.wait()
        except Exception:  # the client is gone: nothing more can be sent
            self._gone = True
        finally:
            self._idle.set()

    async def stop(self) -> None:
        """The session ended: a close it asked for still goes out (briefly), then the writer ends."""
        if self._cut is not None:
            self._cut.cancel()
        if self._close is not None and not self._task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT_S)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
