"""picows clients for the fan-out benchmark: a subscriber that counts ticks, one that stops reading, and one that
sends a burst of pings. picows parses frames in C, so 1,000 of them cost the load generator's core little.

A listener sees each frame in `on_ws_frame`; the payload is only valid during that call, so it is copied at once.
Close codes are read from the payload: picows' WSCloseCode enum has no member for 4008.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import socket
import struct
import termios
import time
from collections.abc import Callable
from typing import Any

import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

TCP_ESTABLISHED = 1
TCP_STATES = {1: "established", 7: "closed (reset)", 8: "close-wait (FIN received)"}


def now_us() -> int:
    return time.time_ns() // 1000


def messages(raw: bytes) -> list[dict[str, Any]]:
    """One text frame's messages: rt batches what is queued into a JSON array."""
    message = orjson.loads(raw)
    return message if isinstance(message, list) else [message]


def subscribed(raw: bytes) -> bool:
    """True once the snapshot that completes a subscribe has arrived; an error frame refuses it."""
    for m in messages(raw):
        if m.get("type") == "error":
            raise RuntimeError(f"subscribe refused: {m}")
        if m.get("type") == "snapshot":
            return True
    return False


class PicowsClient(WSListener):
    """One connection. Text frames go to `on_text(payload, receive_µs)` once subscribed; a close frame is answered
    and its code kept in `close_code`, the time it arrived in `closed_at`; a drop without one sets `lost_at`."""

    def __init__(self, on_text: Callable[[bytes, int], None], on_close: Callable[[int | str], None]) -> None:
        super().__init__()
        self.on_text = on_text
        self.on_close = on_close
        self.extensions: list[str] = []
        self.transport: WSTransport | None = None
        self.close_code: int | None = None
        self.closed_at = 0
        self.lost_at = 0
        self.gone = asyncio.Event()
        self._leaving = False
        self._subscribed: asyncio.Future[None] | None = None

    async def open(self, url: str, subscribe: bytes | None) -> None:
        await ws_connect(lambda: self, url, websocket_handshake_timeout=60, max_frame_size=2**22)
        if subscribe is not None:
            assert self.transport is not None
            self._subscribed = asyncio.get_running_loop().create_future()
            self.transport.send(WSMsgType.TEXT, subscribe)
            await asyncio.wait_for(self._subscribed, 60)
            self._subscribed = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        now = now_us()
        kind = frame.msg_type
        if kind == WSMsgType.TEXT:
            payload = frame.get_payload_as_bytes()
            waiting = self._subscribed
            if waiting is None:
                self.on_text(payload, now)
            elif not waiting.done():
                try:
                    if subscribed(payload):
                        waiting.set_result(None)
                except RuntimeError as exc:
                    waiting.set_exception(exc)
        elif kind == WSMsgType.CLOSE:
            payload = frame.get_payload_as_bytes()
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.closed_at = now
            self.on_close(self.close_code)
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.lost_at = now_us()
        self.gone.set()
        if self.close_code is None and not self._leaving:
            self.on_close("no close frame")
        waiting = self._subscribed
        if waiting is not None and not waiting.done():
            waiting.set_exception(ConnectionError("connection lost"))

    @property
    def disconnected(self) -> bool:
        return self.lost_at != 0

    def send_text(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.send(WSMsgType.TEXT, payload)

    def abort(self) -> None:
        self._leaving = True
        if self.transport is not None:
            self.transport.disconnect(graceful=False)

    # a client that stops reading

    def _socket(self) -> socket.socket | None:
        if self.transport is None or self.disconnected:
            return None
        sock: socket.socket | None = self.transport.underlying_transport.get_extra_info("socket")
        return sock

    def pause_reading(self) -> None:
        assert self.transport is not None
        self.transport.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.disconnected:
            self.transport.underlying_transport.resume_reading()

    def tcp_state(self) -> int:
        """The kernel's TCP state of this socket (1 established, 7 closed, 8 close-wait), 0 once dropped."""
        sock = self._socket()
        if sock is None:
            return 0
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])

    def unread_bytes(self) -> int:
        """Bytes the kernel holds for this socket that nobody has read."""
        sock = self._socket()
        if sock is None:
            return 0
        buf = fcntl.ioctl(sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
        return int(struct.unpack("i", buf)[0])


STUCK_RCVBUF = 4096  # bytes: the kernel doubles it


class Stuck:
    """A subscribed connection that stops reading at `stop()`, reads again at `resume()`, and reports when the
    server let it go: the TCP state leaving `established` while it did not read, and what came once it read."""

    def __init__(self) -> None:
        self.events_after_resume = 0
        self.client = PicowsClient(self._text, lambda code: None)
        self.stopped_at = 0
        self.resumed_at = 0
        self.tcp_changed_at = 0
        self.tcp_state = TCP_ESTABLISHED
        self.unread_at_resume = 0

    def _text(self, payload: bytes, now: int) -> None:
        if self.resumed_at:
            self.events_after_resume += sum(1 for m in messages(payload) if m.get("type") == "event")

    def stop(self) -> None:
        self.client.pause_reading()
        sock = self.client._socket()
        if sock is not None:  # a small window: the server's buffer passes its limit in seconds, not minutes
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STUCK_RCVBUF)
        self.stopped_at = now_us()

    def poll(self) -> None:
        if self.tcp_changed_at or self.resumed_at:
            return
        state = self.client.tcp_state()
        if state != TCP_ESTABLISHED:
            self.tcp_state, self.tcp_changed_at = state, now_us()

    def resume(self) -> None:
        self.unread_at_resume = self.client.unread_bytes()
        self.resumed_at = now_us()
        self.client.resume_reading()

    def report(self) -> dict[str, Any]:
        c = self.client

        def after(t: int) -> float | None:
            return round((t - self.stopped_at) / 1000) if t else None

        if c.close_code is not None:
            outcome = f"close frame {c.close_code}"
        elif c.disconnected:
            outcome = "aborted (no close frame)"
        else:
            outcome = "still open"
        return {
            "outcome": outcome,
            "close_code": c.close_code,
            "close_frame_ms": after(c.closed_at),
            "dropped_ms": after(c.lost_at),
            "tcp_while_stopped": TCP_STATES.get(self.tcp_state, str(self.tcp_state)),
            "tcp_changed_ms": after(self.tcp_changed_at),
            "resumed_ms": after(self.resumed_at),
            "unread_kb_at_resume": round(self.unread_at_resume / 1024, 1),
            "events_after_resume": self.events_after_resume,
        }


async def ping_burst(url: str, count: int, wait_s: float) -> dict[str, Any]:
    """Write `count` pings in one burst, read everything, and count the pongs until all came or the socket closed."""
    pongs = 0
    done = asyncio.Event()

    def text(payload: bytes, now: int) -> None:
        nonlocal pongs
        pongs += sum(1 for m in messages(payload) if m.get("type") == "pong")
        if pongs >= count:
            done.set()

    client = PicowsClient(text, lambda code: done.set())
    await client.open(url, None)
    started = time.perf_counter()
    for i in range(count):
        client.send_text(b'{"op":"ping","id":%d}' % i)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), wait_s)
    seconds = time.perf_counter() - started
    await asyncio.sleep(0.5)  # a close that follows the last pong
    close_code: int | str | None = client.close_code
    if close_code is None and client.disconnected:
        close_code = "aborted (no close frame)"
    client.abort()
    return {"sent": count, "pongs": pongs, "close": close_code, "seconds": round(seconds, 3)}
