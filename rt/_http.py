"""uvicorn's httptools protocol with bounds on a request's head, in size and in time, refused as problem+json before
the app sees it.

httptools itself has no bound: it grows a header by concatenation for as long as the client sends, so one client's
endless header held the event loop for seconds while everyone else waited. Nor does uvicorn time a head: its
keep-alive timer stops at a request's first byte and is never started on a new connection, so a client sending one
header line a second, or nothing at all, held its connection for as long as it liked."""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from rt.errors import BAD_REQUEST, RtError
from rt.wire import dumps

log = logging.getLogger("rt.http")

MAX_REQUEST_LINE = 8 * 1024  # nginx's large_client_header_buffers
MAX_HEAD_BYTES = 16 * 1024  # h11's and Node's bound on request line plus headers
MAX_HEADERS = 100  # Apache's LimitRequestFields
LINGER_S = 2.0  # how long the rest of a refused request is read and dropped, so the client sees the refusal


class _Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    head_timeout_s: float = 0.0  # set by with_head_deadline(); 0 means no deadline

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_begun = False  # a request line has started and its head is not complete
        self._in_head = True  # between messages or inside a request line and headers
        self._url_bytes = 0
        self._header_bytes = 0  # url and headers parsed so far
        self._header_count = 0
        self._read_bytes = 0  # bytes read while the head stayed open, parsed or not
        self._message_ended = False
        self._draining = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return
        chunk_in_head = self._in_head
        self._message_ended = False
        try:
            self._feed(data)
        except _Refused as refused:
            self._answer(refused)
            return
        if not self._in_head or self.transport.is_closing():
            return
        # The head is still open after this chunk. When the chunk began inside it and no message ended within it,
        # every byte of it belongs to the head; otherwise it is not counted (pipelining: off by one read at most).
        if chunk_in_head and not self._message_ended:
            self._read_bytes += len(data)
        try:
            self._check_head(max(self._read_bytes, self._header_bytes))
        except _Refused as refused:
            self._answer(refused)

    def _feed(self, data: bytes) -> None:
        """uvicorn's data_received, except that a refusal raised in a parser callback is ours to answer."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _Refused):
                raise exc.__context__ from None
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_begun = True
        self._url_bytes = self._header_bytes = self._header_count = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._url_bytes += len(url)
        self._header_bytes += len(url)
        self._check_head(self._header_bytes)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        self._check_head(self._header_bytes)

    def on_headers_complete(self) -> None:
        self._check_head(self._header_bytes)
        self._in_head = self._head_begun = False
        self._stop_head_deadline()  # also before a WebSocket upgrade, after which this protocol is not called again
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._read_bytes = 0
        self._message_ended = True
        if self.cycle is not None and self.cycle.response_complete and not self.pipeline:
            self._start_head_deadline()  # answered before its body was read: the next head starts now

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Pipelined requests still to answer have their heads; the deadline waits for the last response.
        if not self.transport.is_closing() and self.cycle.response_complete and self._in_head:
            self._start_head_deadline()

    def _start_head_deadline(self) -> None:
        """From a new connection, or the end of a response, until the next request's head is complete.

        Between requests uvicorn's keep-alive timer also runs and closes an idle connection: whichever is shorter
        closes it. The keep-alive timer stops at the next request's first byte; this one goes on to the end of the
        head, as nginx's client_header_timeout does."""
        self._stop_head_deadline()
        if self.head_timeout_s > 0:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _stop_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._draining or not self._in_head:
            return
        if self._head_begun:
            self._answer(_Refused(408, f"the request line and headers did not arrive within {self.head_timeout_s:g} s"))
            return
        log.info("idle connection closed", extra={"reason": "no request within the head deadline", "ip": self._ip()})
        self.transport.close()

    def _check_head(self, size: int) -> None:
        if self._url_bytes > MAX_REQUEST_LINE:
            raise _Refused(414, f"the request line is longer than {MAX_REQUEST_LINE} bytes")
        if self._header_count > MAX_HEADERS:
            raise _Refused(431, f"a request may carry at most {MAX_HEADERS} headers")
        if size > MAX_HEAD_BYTES:
            raise _Refused(431, f"the request line and headers exceed {MAX_HEAD_BYTES} bytes")

    def _answer(self, refused: _Refused) -> None:
        self._stop_head_deadline()
        request_id = f"req_{secrets.token_hex(10)}"
        error = RtError(refused.detail, status=refused.status, code=BAD_REQUEST)
        body = dumps(error.problem(request_id))
        head = [b"HTTP/1.1 %d %s\r\n" % (refused.status, error.title.encode())]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/problem+json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: " + request_id.encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        log.info(
            "request refused",
            extra={"status": refused.status, "reason": refused.detail, "request_id": request_id, "ip": self._ip()},
        )
        # Closing with the client's bytes still unread would reset the connection and lose the answer: send it,
        # stop writing, and drop what still arrives for a bounded time, as nginx's lingering close does.
        self._draining = True
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)

    def _ip(self) -> str | None:
        return self.client[0] if self.client else None


def with_head_deadline(seconds: float) -> type[BoundedHttpToolsProtocol]:
    """The protocol uvicorn builds for each connection, giving a request `seconds` to send its head (0: forever)."""

    class Protocol(BoundedHttpToolsProtocol):
        head_timeout_s = float(seconds)

    return Protocol
