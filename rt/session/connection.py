"""One WebSocket session: a reader that handles client messages, a writer that drains one bounded queue.

The reader and the writer run together; when one ends the other is cancelled. A session that cannot keep up
is closed with 4008 and never slows the hub or the other sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections import deque
from enum import Enum
from typing import TYPE_CHECKING, Any

import orjson
from starlette.types import Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from rt.api.idempotency import fingerprint
from rt.auth.limiter import gcra
from rt.auth.principal import Principal
from rt.errors import RATE_LIMITED, RtError, TooManyRequests, outage
from rt.records.ids import new_id
from rt.session import commands, protocol
from rt.wire import dumps

if TYPE_CHECKING:
    from rt.runtime import Runtime

log = logging.getLogger("rt.session")

ABUSE_LIMIT = 20  # refused commands in a row before the socket is closed with 4029
COMMAND_GRACE_S = 10.0  # how long commands already received may run on after their socket is gone


class State(Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


def now_us() -> int:
    return time.time_ns() // 1000


async def receive_frame(ws: WebSocket) -> str | bytes:
    """The next frame, text or binary: a binary frame is parsed like text, never a reason to fail the session."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text: str | None = message.get("text")
    if text is not None:
        return text
    data: bytes = message.get("bytes") or b""
    return data


class Session:
    def __init__(
        self,
        ws: WebSocket,
        runtime: Runtime,
        principal: Principal,
        *,
        batch: bool = True,
        send: Send | None = None,
        token: str | None = None,
        first: protocol.Message | protocol.InvalidMessage | None = None,
    ) -> None:
        self.ws = ws
        self._token = token  # the (spent) token that opened this session, which later messages may repeat
        # What the first message that carried the token asked: a subscribe performed before any other frame, or the
        # error answering a Kraken subscribe rt maps to no channel.
        self._first = first
        self._send = send or ws.send
        self.runtime = runtime
        self.engine = runtime.engine
        self.principal = principal
        self.batch = batch
        self.state = State.OPEN
        self.close_code: int | None = None
        self.channels: set[str] = set()
        self.session_id = new_id("ses")
        self.cancel_on_disconnect = False
        self._mine: set[str] = set()
        self.unsaved = False  # an order of it, or the record itself, is not in the durable switch yet
        self._queue: deque[str] = deque()
        self._limit = runtime.settings.ws_queue
        self._wake = asyncio.Event()
        self._last_in = time.monotonic()
        self._last_out = self._last_in
        self._tat: float | None = None
        self._refused = 0
        self._floor: dict[str, int] = {}
        self._held: dict[str, list[tuple[int, str]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = asyncio.Event()
        self.draining = False

    # the hub's side

    def offer_event(self, channel: str, seq: int, frame: str) -> None:
        """An event from the hub; ones already covered by this channel's snapshot or replay are dropped."""
        held = self._held.get(channel)
        if held is not None:
            if len(held) >= self._limit:
                self.runtime.sessions.slow_consumer_closes += 1
                self.begin_close(protocol.SLOW_CONSUMER, "slow consumer: send queue full")
            held.append((seq, frame))
        elif seq > self._floor.get(channel, 0):
            self.offer(frame)

    def hold(self, channel: str) -> None:
        """Subscribed at the hub, snapshot not sent yet: keep this channel's events until it is."""
        self._held[channel] = []

    def subscribed(self, channel: str, floor: int) -> None:
        """The snapshot (or replay) up to `floor` is queued: release what arrived meanwhile, past the floor."""
        self.channels.add(channel)
        self._floor[channel] = floor
        for seq, frame in self._held.pop(channel, []):
            if seq > floor:
                self.offer(frame)

    def release(self, channel: str) -> None:
        self._held.pop(channel, None)

    def offer(self, frame: str) -> None:
        if self.state is not State.OPEN:
            return
        if len(self._queue) >= self._limit:
            self.runtime.sessions.slow_consumer_closes += 1
            self.begin_close(protocol.SLOW_CONSUMER, "slow consumer: send queue full")
            return
        self._queue.append(frame)
        self._wake.set()

    def send(self, message: dict[str, Any]) -> None:
        self.offer(dumps(message).decode())

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def begin_close(self, code: int, reason: str = "") -> None:
        """Stop taking frames and let the writer close the socket after what is queued (none for 4008)."""
        if self.state is not State.OPEN:
            return
        self.state = State.CLOSING
        self.close_code = code
        self._close_reason = reason
        if code == protocol.SLOW_CONSUMER:
            self._queue.clear()
        self._wake.set()

    # running

    async def run(self) -> None:
        hub = self.runtime.hub
        reader = asyncio.create_task(self._reader(), name="ws-reader")
        writer = asyncio.create_task(self._writer(), name="ws-writer")
        try:
            done, pending = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            # The other side may fail too (a dropped client fails both reader and writer): nothing left to report.
            await asyncio.gather(*pending, return_exceptions=True)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if not isinstance(exc, WebSocketDisconnect):
                        log.error("session failed", exc_info=exc)
                        await self._close(protocol.INTERNAL, "internal error")
        finally:
            self.state = State.CLOSED
            self.closed.set()
            for channel in self.channels | set(self._held):
                hub.remove(self.principal.account_id, channel, self)
            await self._settle_commands()
            if self.cancel_on_disconnect:
                await self._cancel_mine()

    async def finish_commands(self, grace: float) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)

    async def _settle_commands(self) -> None:
        """Commands already received run to their end, as a REST request whose client left does: cut off inside
        the engine they could leave an order placed but unknown to the dead man's switch."""
        if not self._tasks:
            return
        _, late = await asyncio.wait(set(self._tasks), timeout=COMMAND_GRACE_S)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(Exception):
            await self.ws.close(code, reason)

    def on_clock(self, now: float, heartbeat: float, idle: float) -> None:
        """Called about once a second by the manager's one timer (a timer per delivery would cost more than
        the delivery): heartbeat after silence, close an idle socket."""
        if self.state is not State.OPEN or self._queue:
            return
        if not self.channels and now - self._last_in > idle:
            self.begin_close(protocol.IDLE, "idle: no subscription and no message")
        elif now - self._last_out >= heartbeat:
            self.send({"type": "heartbeat", "ts": now_us()})

    async def _writer(self) -> None:
        while True:
            if not self._queue and self.state is State.OPEN:
                self._wake.clear()
                await self._wake.wait()
            if self._queue:
                await self._flush()
                self._last_out = time.monotonic()
            if self.state is State.CLOSING and not self._queue:
                await self._close(self.close_code or protocol.NORMAL, getattr(self, "_close_reason", ""))
                return

    async def _flush(self) -> None:
        queue = self._queue
        if self.batch and len(queue) > 1:
            frames = [queue.popleft() for _ in range(min(len(queue), 256))]
            text = "[" + ",".join(frames) + "]"
        else:
            text = queue.popleft()
        try:
            await self._send({"type": "websocket.send", "text": text})
        except OSError:  # uvicorn's ClientDisconnected: the client is gone, as Starlette's send would report it
            raise WebSocketDisconnect(1006) from None

    async def _reader(self) -> None:
        if self._first is not None:
            first, self._first = self._first, None
            if isinstance(first, protocol.InvalidMessage):
                self.send(protocol.error_frame(first, first.request_id))
            else:
                await self.handle(first)
        while True:
            raw = await receive_frame(self.ws)
            self._last_in = time.monotonic()
            if self.state is not State.OPEN:
                continue
            try:
                message = protocol.parse(raw)
            except protocol.InvalidMessage as exc:
                self.send(protocol.error_frame(exc, exc.request_id))
                continue
            await self.handle(message)

    # messages

    async def handle(self, message: protocol.Message) -> None:
        try:
            if message.token is not None and message.op != "auth" and not self._own_token(message.token):
                raise RtError(
                    "this session is authenticated with another token; open a new connection to use this one",
                    status=400,
                    code="BAD_REQUEST",
                )
            if message.op == "subscribe":
                await self.subscribe(message)
            elif message.op == "unsubscribe":
                self.unsubscribe(message)
            elif message.op == "ping":
                self.send({"type": "pong", "id": message.id, "ts": now_us()})
            elif message.op == "auth":
                raise RtError("already authenticated", status=400, code="BAD_REQUEST")
            elif message.op in commands.COMMANDS:
                if self.draining:
                    raise RtError(
                        "the server is shutting down; send this command again after reconnecting",
                        status=503,
                        code="SERVICE_UNAVAILABLE",
                    )
                self._throttle()
                self._spawn(self.command(message))
            else:
                raise RtError(f"unknown op {message.op!r}", status=400, code="BAD_REQUEST")
        except RtError as exc:
            self.send(protocol.error_frame(exc, message.id))
        except Exception as exc:
            unavailable = outage(exc)
            if unavailable is None:
                raise
            self.send(protocol.error_frame(unavailable, message.id))

    def _own_token(self, token: str) -> bool:
        """Kraken clients repeat the session's token in every subscribe: that one is accepted (it is spent and grants
        nothing more); another token would be a second identity on one socket, so it is refused and left unspent."""
        return self._token is not None and hmac.compare_digest(token.encode(), self._token.encode())

    def _throttle(self) -> None:
        tier = self.runtime.tiers[self.principal.tier]
        decision, new_tat = gcra(time.monotonic(), self._tat, tier.per_minute, tier.burst)
        if new_tat is not None:
            self._tat = new_tat
            self._refused = 0
            return
        self._refused += 1
        if self._refused >= ABUSE_LIMIT:
            self.begin_close(protocol.RATE_LIMITED, "command rate limit")
        raise TooManyRequests(
            f"command rate limit of {tier.per_minute}/min exceeded; retry in {decision.retry_after:.1f}s",
            code=RATE_LIMITED,
            retry_after=decision.retry_after,
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def command(self, message: protocol.Message) -> None:
        time_in = now_us()
        op, params = message.op, dict(message.params)
        try:
            if message.id is None:
                raise RtError("a command needs an `id`", status=400, code="BAD_REQUEST")
            protocol.require(self.principal.scopes, protocol.COMMAND_SCOPES[op])
            key = commands.idempotency_key(op, params) if op in commands.IDEMPOTENT else None
            handler = commands.COMMANDS[op]
            if key is None:
                data = await handler(self, params)
                body = commands.encode(data)
            else:
                status, body, _ = await self.runtime.idempotency.once(
                    self.principal.account_id,
                    key,
                    fingerprint(op, params),
                    lambda: self._as_pair(op, handler, params),
                )
                if status >= 400:
                    self._send_error_body(message.id, body)
                    return
            self.runtime.sessions.observe_command(op, (now_us() - time_in) / 1000)
            self.offer(
                '{"type":"result","id":'
                + orjson.dumps(message.id).decode()
                + ',"time_in":'
                + str(time_in)
                + ',"time_out":'
                + str(now_us())
                + ',"data":'
                + body.decode()
                + "}"
            )
        except RtError as exc:
            frame = protocol.error_frame(exc, message.id)
            frame["time_in"], frame["time_out"] = time_in, now_us()
            self.send(frame)
        except Exception as exc:
            error: RtError | None = outage(exc)
            if error is None:
                log.exception("command failed", extra={"op": op})
                error = RtError("the server failed to run this command")
            frame = protocol.error_frame(error, message.id)
            frame["time_in"], frame["time_out"] = time_in, now_us()
            self.send(frame)

    async def _as_pair(self, op: str, handler: commands.Command, params: dict[str, Any]) -> tuple[int, bytes]:
        try:
            result = await handler(self, params)
            return commands.answer_status(op, result), commands.encode(result)
        except RtError as exc:
            return exc.status, dumps(exc.problem())

    def _send_error_body(self, request_id: str | int, body: bytes) -> None:
        self.offer('{"type":"error","id":' + orjson.dumps(request_id).decode() + ',"error":' + body.decode() + "}")

    async def subscribe(self, message: protocol.Message) -> None:
        channel = message.channel
        if not channel:
            raise RtError("subscribe needs a `channel`", status=400, code="BAD_REQUEST")
        scope = protocol.channel_scope(channel)
        protocol.require(self.principal.scopes, scope)
        if channel in self.channels:
            raise RtError(f"already subscribed to {channel}", status=400, code="BAD_REQUEST")
        await self.runtime.sessions.attach(self, channel, message.id, message.since)

    def unsubscribe(self, message: protocol.Message) -> None:
        channel = message.channel or ""
        if channel not in self.channels:
            raise RtError(f"not subscribed to {channel!r}", status=400, code="BAD_REQUEST")
        self.channels.discard(channel)
        self._floor.pop(channel, None)
        self.runtime.hub.remove(self.principal.account_id, channel, self)
        self.send({"type": "unsubscribed", "channel": channel, "id": message.id})

    # dead man's switch

    async def configure(self, cancel_on_disconnect: bool) -> None:
        """On: this session is kept in the durable switch before the answer, so its orders are canceled even when
        this instance dies; off: it is dropped from it."""
        deadman = self.runtime.sessions.deadman
        if not cancel_on_disconnect:
            # Dropped first: a record left behind without its heartbeat would lapse and cancel the orders after all.
            await deadman.forget(self.session_id)
            self.cancel_on_disconnect = False
            return
        kept = set(self._mine)
        await deadman.watch(self.session_id, self.principal.account_id, kept)
        self.cancel_on_disconnect, self.unsaved = True, False
        for order_id in self._mine - kept:  # placed by a command that ran meanwhile
            await deadman.placed(self.session_id, order_id)

    async def placed(self, order_id: str) -> None:
        if len(self._mine) > 1000:  # keep only the ones that can still be canceled
            book = self.engine.cached_book(self.principal.account_id)
            if book is not None:
                self._mine = {i for i in self._mine if i in book.orders}
                self.unsaved = self.cancel_on_disconnect
        self._mine.add(order_id)
        if not self.cancel_on_disconnect:
            return
        try:
            await self.runtime.sessions.deadman.placed(self.session_id, order_id)
        except Exception as exc:
            # The order is placed: its answer goes out, and the next heartbeat writes the session again whole.
            self.unsaved = True
            log.warning("recording an order for cancel_on_disconnect failed", extra={"error": type(exc).__name__})

    async def save_watch(self) -> None:
        """Write this session into the durable switch again, whole (after its record was lost or left behind)."""
        await self.runtime.sessions.deadman.forget(self.session_id)
        await self.runtime.sessions.deadman.watch(self.session_id, self.principal.account_id, self._mine)
        self.unsaved = False

    async def _cancel_mine(self) -> None:
        """A clean close: cancel here and now, then drop the session from the durable switch. Should this fail or
        this instance die first, the record stays and the holder of the `deadman` role cancels them."""
        from rt.session.manager import cancel_orders

        book = self.engine.cached_book(self.principal.account_id)
        still_open = [i for i in self._mine if book is None or i in book.orders]
        await cancel_orders(self.engine, self.principal.account_id, still_open)
        try:
            await self.runtime.sessions.deadman.forget(self.session_id)
        except Exception as exc:
            log.warning(
                "dropping a closed session from the dead man's switch failed", extra={"error": type(exc).__name__}
            )
