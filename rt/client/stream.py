"""A WebSocket session that survives disconnects: new token, reconnect with backoff, resubscribe with `since`,
and no message seen twice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import websockets

if TYPE_CHECKING:
    from rt.client.rest import Client

log = logging.getLogger("rt.client")

# Closes that reconnecting cannot fix.
FATAL = {4003}


class StreamClosed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"stream closed by the server: {code} {reason}")
        self.code = code


@dataclass(frozen=True)
class Retry:
    """A failed connection attempt: which one in a row, why, and how long the stream waits before the next."""

    attempt: int
    reason: str
    delay: float


class StreamUnavailable(Exception):
    """`max_attempts` connection attempts in a row failed; `reason` is the last failure."""

    def __init__(self, attempts: int, reason: str) -> None:
        super().__init__(f"gave up after {attempts} failed connection attempts: {reason}")
        self.attempts = attempts
        self.reason = reason


class Stream:
    """Async iterator of server messages (dicts) on the given channels.

    `last_seq` holds the last sequence number seen per channel; after a reconnect each channel is subscribed with
    `since`, so the server replays what was missed (or sends a snapshot with `reset: true`).

    A client with several URLs connects to its current one (`Client.base_url`); when that connection fails or drops,
    the stream (and the client) moves on to the next URL and connects there at once, resuming with `since`.
    Once every URL has failed in a row, each next attempt waits a jittered exponential backoff up to `max_backoff`
    seconds. `on_retry` hears of each failure. With `max_attempts`, that many failures in a row (no message received
    in between) end the iteration with StreamUnavailable; without it the stream retries for as long as it is
    iterated.
    """

    def __init__(
        self,
        client: Client,
        channels: Iterable[str],
        *,
        batch: bool = True,
        max_backoff: float = 10.0,
        include_heartbeats: bool = False,
        max_attempts: int | None = None,
        on_retry: Callable[[Retry], None] | None = None,
    ) -> None:
        self._client = client
        self.channels = list(channels)
        self.last_seq: dict[str, int] = {}
        self.reconnects = 0
        self._batch = batch
        self._max_backoff = max_backoff
        self._heartbeats = include_heartbeats
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._closed = False
        self._max_attempts = max_attempts
        self._on_retry = on_retry
        self._target = client.base_url
        self.connected_to: str | None = None  # the base URL of the open connection

    @property
    def url(self) -> str:
        """The WebSocket URL the stream connects to next (each connection adds a fresh token)."""
        return _ws_url(self._client.base_url)

    def _url(self, base: str, token: str) -> str:
        return f"{_ws_url(base)}?token={token}" + ("" if self._batch else "&batch=0")

    async def _connect(self) -> None:
        # The token is asked of the instance the socket will open on: a failure there is one failure, of that URL.
        base = self._target = self._client.base_url
        token = await self._client.ws_token(at=base)
        self._ws = await websockets.connect(self._url(base, token), max_size=2**22, compression=None)
        self.connected_to = base
        for channel in self.channels:
            message: dict[str, Any] = {"op": "subscribe", "channel": channel, "id": f"sub-{channel}"}
            if channel in self.last_seq:
                message["since"] = self.last_seq[channel]
            await self._ws.send(orjson.dumps(message).decode())

    async def command(self, op: str, params: dict[str, Any], wait: float = 10.0) -> dict[str, Any]:
        """Send a command and wait for its `result` (raises ApiError on `error`). Needs the iterator running."""
        from rt.client.rest import ApiError

        if self._ws is None:
            raise RuntimeError("the stream is not connected; iterate it first")
        request_id = f"cmd-{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        await self._ws.send(orjson.dumps({"op": op, "id": request_id, "params": params}).decode())
        try:
            reply = await asyncio.wait_for(future, wait)
        finally:
            self._pending.pop(request_id, None)
        if reply["type"] == "error":
            raise ApiError(int(reply["error"].get("status", 400)), reply["error"])
        return reply

    def _accept(self, message: dict[str, Any]) -> bool:
        """Track seq; False for a message already seen."""
        kind = message.get("type")
        if kind in ("result", "error") and message.get("id") in self._pending:
            self._pending[message["id"]].set_result(message)
            return False
        channel = message.get("channel")
        if kind == "event" and channel:
            seq = int(message["seq"])
            if seq <= self.last_seq.get(channel, 0):
                return False
            self.last_seq[channel] = seq
        elif kind == "snapshot" and channel:
            self.last_seq[channel] = int(message["seq"])
        elif kind == "heartbeat" and not self._heartbeats:
            return False
        return True

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        from rt.client.rest import ApiError

        delay = 0.25
        failures = 0
        failed: set[str] = set()  # the URLs that failed since the last message
        while not self._closed:
            reason = ""
            try:
                if self._ws is None:
                    await self._connect()
                async for frame in self._ws:
                    delay, failures = 0.25, 0
                    failed.clear()
                    decoded = orjson.loads(frame)
                    for message in decoded if isinstance(decoded, list) else (decoded,):
                        if self._accept(message):
                            yield message
                code = self._ws.close_code
                if code in FATAL:
                    raise StreamClosed(code, self._ws.close_reason or "")
                reason = f"the server closed the connection ({code} {self._ws.close_reason or ''}".rstrip() + ")"
            except (TimeoutError, OSError, httpx.TransportError, websockets.WebSocketException) as exc:
                reason = self._reason(exc)
                log.info("stream disconnected, reconnecting", extra={"error": type(exc).__name__})
            except ApiError as exc:
                # A server restarting or overloaded answers the token request with 5xx or 429; a bad or revoked
                # key will not get better by retrying.
                if exc.status < 500 and exc.status != 429:
                    raise
                reason = f"the token request failed: {exc}"
                log.info("token request failed, reconnecting", extra={"status": exc.status})
            with contextlib.suppress(Exception):
                if self._ws is not None:
                    await self._ws.close()
            self._ws = None
            self.connected_to = None
            if self._closed:
                return
            failures += 1
            failed.add(self._target)
            # Another instance that has not failed yet is tried at once; once all have, the stream backs off.
            fresh = self._client.move_on(self._target) not in failed
            if self._max_attempts is not None and failures >= self._max_attempts:
                raise StreamUnavailable(failures, reason)
            wait = 0.0 if fresh else min(delay + random.uniform(0, delay / 2), self._max_backoff)
            if self._on_retry is not None:
                self._on_retry(Retry(failures, reason, wait))
            self.reconnects += 1
            if not fresh:
                await asyncio.sleep(wait)
                delay = min(delay * 2, self._max_backoff)

    def _reason(self, exc: BaseException) -> str:
        base = self._target
        if isinstance(exc, httpx.ConnectError | ConnectionRefusedError):
            cause = _innermost(exc)
            if isinstance(cause, ConnectionRefusedError):
                return f"cannot connect to {base}: connection refused (is rt serve listening there?)"
            return f"cannot connect to {base}: {_cause(cause)}"
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            return f"no answer from {base} in time"
        if isinstance(exc, websockets.InvalidStatus):
            return f"the WebSocket handshake was refused with HTTP {exc.response.status_code}"
        return f"{type(exc).__name__}: {_cause(exc)}"

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()


def _ws_url(base: str) -> str:
    return base.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/v1/ws"


def _innermost(exc: BaseException) -> BaseException:
    """httpx says "All connection attempts failed" over the OSError that says why."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return exc


def _cause(exc: BaseException) -> str:
    inner = _innermost(exc)
    return str(inner) or type(inner).__name__
