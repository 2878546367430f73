"""A WebSocket session that survives disconnects: new token, reconnect with backoff, resubscribe with `since`,
and no message seen twice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Iterable
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


class Stream:
    """Async iterator of server messages (dicts) on the given channels.

    `last_seq` holds the last sequence number seen per channel; after a reconnect each channel is subscribed with
    `since`, so the server replays what was missed (or sends a snapshot with `reset: true`).
    """

    def __init__(
        self,
        client: Client,
        channels: Iterable[str],
        *,
        batch: bool = True,
        max_backoff: float = 10.0,
        include_heartbeats: bool = False,
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

    def _url(self, token: str) -> str:
        base = self._client.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        return f"{base}/v1/ws?token={token}" + ("" if self._batch else "&batch=0")

    async def _connect(self) -> None:
        token = await self._client.ws_token()
        self._ws = await websockets.connect(self._url(token), max_size=2**22, compression=None)
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
        while not self._closed:
            try:
                if self._ws is None:
                    await self._connect()
                async for frame in self._ws:
                    delay = 0.25
                    decoded = orjson.loads(frame)
                    for message in decoded if isinstance(decoded, list) else (decoded,):
                        if self._accept(message):
                            yield message
                code = self._ws.close_code
                if code in FATAL:
                    raise StreamClosed(code, self._ws.close_reason or "")
            except (TimeoutError, OSError, httpx.TransportError, websockets.WebSocketException) as exc:
                log.info("stream disconnected, reconnecting", extra={"error": type(exc).__name__})
            except ApiError as exc:
                # A server restarting or overloaded answers the token request with 5xx or 429; a bad or revoked
                # key will not get better by retrying.
                if exc.status < 500 and exc.status != 429:
                    raise
                log.info("token request failed, reconnecting", extra={"status": exc.status})
            with contextlib.suppress(Exception):
                if self._ws is not None:
                    await self._ws.close()
            self._ws = None
            if self._closed:
                return
            self.reconnects += 1
            await asyncio.sleep(delay + random.uniform(0, delay / 2))
            delay = min(delay * 2, self._max_backoff)

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            await self._ws.close()
