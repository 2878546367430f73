"""One WebSocket session: one task reads the client's messages; what goes out is written from wherever it is made.

Events from the hub, replies and heartbeats go straight to the wire (rt/session/wire.py) while the client keeps up.
A client that is behind (its transport buffer over the high-water mark) gets a bounded queue, sent as one JSON array
per write once it drains (`?batch=0`: one message per write); an event that finds the queue full, or the buffer over
the mark for longer than RT_WS_STALL_S, closes the session with 4008, and never slows the hub or the other sessions.
Replies to the client's own messages are never a reason for 4008: the reader waits for the wire to drain before it
reads on, so a client that pipelines requests is slowed down, not cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from starlette.types import Receive
from starlette.websockets import WebSocketDisconnect

from rt.api.idempotency import Idempotency, fingerprint
from rt.auth.limiter import gcra
from rt.auth.principal import Principal
from rt.auth.tiers import Tier
from rt.channels.hub import Subscription
from rt.errors import RATE_LIMITED, RtError, TooManyRequests, outage
from rt.records.ids import new_id
from rt.session import commands, frames, protocol
from rt.session.frames import Outgoing, now_us
from rt.session.protocol import CloseCode
from rt.session.wire import Wire

if TYPE_CHECKING:
    from rt.engine.engine import Engine
    from rt.session.manager import Sessions
    from rt.strategies.runner import Runner

log = logging.getLogger("rt.session")

ABUSE_LIMIT = 20  # refused commands in a row before the socket is closed with 4029
COMMAND_GRACE_S = 10.0  # how long commands already received may run on after their socket is gone
BATCH_MAX = 256  # messages in one catch-up array


@dataclass(frozen=True, slots=True)
class Context:
    """What a session uses of its instance: one for all of them, made by the manager."""

    engine: Engine
    runner: Runner
    idempotency: Idempotency
    tiers: dict[str, Tier]
    sessions: Sessions
    queue: int  # RT_WS_QUEUE
    stall_s: float  # RT_WS_STALL_S
    make_way: Callable[[], None]  # a command is about to run: the fan-out's next slice waits for it (Hub.make_way)


class State(Enum):
    OPEN = "open"
    CLOSING = "closing"  # the close frame goes once what is queued is sent
    CLOSED = "closed"


async def receive_frame(receive: Receive) -> str | bytes:
    """The next frame, text or binary: a binary frame is parsed like text, never a reason to fail the session."""
    message = await receive()
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
        receive: Receive,
        context: Context,
        principal: Principal,
        wire: Wire,
        *,
        batch: bool = True,
        token: str | None = None,
        first: protocol.Message | protocol.InvalidMessage | None = None,
    ) -> None:
        self._receive = receive
        self.wire = wire
        self._token = token  # the (spent) token that opened this session, which later messages may repeat
        # What the first message that carried the token asked: a subscribe performed before any other frame, or the
        # error answering a Kraken subscribe rt maps to no channel.
        self._first = first
        self.context = context
        self.engine = context.engine
        self.runner = context.runner
        self.principal = principal
        self.batch = batch
        self.state = State.OPEN
        self.close_code: int | None = None
        self._close_reason = ""
        self.subscriptions: dict[str, Subscription] = {}
        self.session_id = new_id("ses")
        self.cancel_on_disconnect = False
        self._mine: set[str] = set()
        self.unsaved = False  # an order of it, or the record itself, is not in the durable switch yet
        self._queue: deque[bytes] | None = None  # only while the client is behind
        self._events_queued = False  # an event waits in it, not only answers to the client's own messages
        self._limit = context.queue
        self._stall = context.stall_s
        self._last_in = time.monotonic()
        self._last_out = self._last_in
        self._sent = 0  # messages written, read by the clock to tell silence
        self._sent_seen = 0
        self._tat: float | None = None
        self._refused = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended: asyncio.Future[None] | None = None  # made by the first wait_closed()
        self.draining = False
        wire.on_drain(self._drain)

    @property
    def channels(self) -> set[str]:
        """The channels whose snapshot is sent and whose events flow."""
        return {channel for channel, sub in self.subscriptions.items() if sub.started}

    # what goes out

    def offer(self, out: Outgoing) -> None:
        """An event from the hub (or a replayed one)."""
        if self._queue is None and not self.wire.paused and self.state is State.OPEN:
            self.wire.write(out.payload, out.framed)
            self._sent += 1
        else:
            self._push(out.payload, event=True)

    def fell_behind(self) -> None:
        self._slow_consumer("slow consumer: too many events while subscribing")

    def send_bytes(self, payload: bytes) -> None:
        """A reply, a snapshot, a heartbeat: in order with the events, never a reason for 4008."""
        if self._queue is None and not self.wire.paused and self.state is State.OPEN:
            self.wire.write(payload)
            self._sent += 1
        else:
            self._push(payload, event=False)

    def send(self, message: dict[str, Any]) -> None:
        self.send_bytes(frames.message(message))

    def _push(self, payload: bytes, event: bool) -> None:
        wire = self.wire
        if self.state is not State.OPEN or wire.closed:
            return  # a client that left is not behind: what it would have been sent is dropped
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if event and len(queue) >= self._limit:
            self._slow_consumer("slow consumer: send queue full")
            return
        if event and wire.paused and time.monotonic() - wire.paused_at > self._stall:
            self._slow_consumer("slow consumer: not reading")
            return
        queue.append(payload)
        self._events_queued |= event
        if not wire.paused:
            self._drain()

    def _drain(self) -> None:
        """The wire took what it had: send what is queued, as one array per write, until it is behind again."""
        queue, wire = self._queue, self.wire
        while queue and not wire.paused and not wire.closed:
            if self.batch and len(queue) > 1:
                wire.write(frames.batch([queue.popleft() for _ in range(min(len(queue), BATCH_MAX))]))
            else:
                wire.write(queue.popleft())
            self._sent += 1
        if not queue or wire.closed:
            self._queue, self._events_queued = None, False
            if self.state is State.CLOSING:
                self._close_wire()

    @property
    def queue_depth(self) -> int:
        return len(self._queue) if self._queue is not None else 0

    def _slow_consumer(self, reason: str) -> None:
        if self.state is State.CLOSED or self.close_code == CloseCode.SLOW_CONSUMER:
            return
        self.context.sessions.slow_consumer_closes += 1
        wire = self.wire
        log.info(
            "slow consumer closed",
            extra={
                "session_id": self.session_id,
                "account_id": self.principal.account_id,
                "queued": self.queue_depth,
                # How long its transport's buffer had been over the high-water mark.
                "behind_s": round(time.monotonic() - wire.paused_at, 3) if wire.paused else 0.0,
            },
        )
        self.state = State.CLOSING
        self.close_code, self._close_reason = CloseCode.SLOW_CONSUMER, reason
        self._close_wire()

    def begin_close(self, code: int, reason: str = "") -> None:
        """Stop taking messages; the close frame goes once what is queued is sent."""
        if self.state is not State.OPEN:
            return
        self.state = State.CLOSING
        self.close_code, self._close_reason = code, reason
        if self._queue is None or self.wire.closed:
            self._close_wire()

    def close_now(self) -> None:
        """A close begun after what is queued goes now, dropping the rest (a shutdown whose grace ran out)."""
        if self.state is State.CLOSING:
            self._close_wire()

    def _close_wire(self) -> None:
        """The close frame now: what is still queued is dropped, never sent ahead of it."""
        self._queue, self._events_queued = None, False
        self.wire.close(self.close_code or CloseCode.NORMAL, protocol.close_reason(self._close_reason))

    # running

    async def run(self) -> None:
        try:
            await self._reader()
        except WebSocketDisconnect:
            pass  # either side closed: a normal end
        except Exception:
            self._failed()
        finally:
            self.state = State.CLOSED
            self._queue = None
            if self._ended is not None and not self._ended.done():
                self._ended.set_result(None)
            for subscription in self.subscriptions.values():
                subscription.close()
            await self._settle_commands()
            if self.cancel_on_disconnect:
                await self._cancel_mine()

    def _failed(self) -> None:
        """What the session was doing raised: logged with its traceback, and the client gets 1011."""
        if self.wire.closed:
            log.debug("session ended while closing", exc_info=True)
            return
        log.error("session failed", exc_info=True)
        self.state = State.CLOSING
        self.close_code, self._close_reason = CloseCode.INTERNAL, "internal error"
        self._close_wire()

    async def wait_closed(self) -> None:
        if self.state is State.CLOSED:
            return
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._ended)

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

    def on_clock(self, now: float, heartbeat: float, idle: float) -> None:
        """Called about once a second by the manager's one timer (a timer per delivery would cost more than
        the delivery): a client behind for too long is closed, a heartbeat after silence, an idle socket closed."""
        if self.state is State.CLOSED:
            return
        if self._queue is not None:
            if self.wire.paused and now - self.wire.paused_at > self._stall:
                if self.state is State.CLOSING:
                    self._close_wire()  # it will not read what it still has queued: the close goes now
                elif self._events_queued:
                    self._slow_consumer("slow consumer: not reading")
                # Only answers to its own messages wait: it is slowed down (its reader waits), never cut for them.
            return
        if self.state is not State.OPEN:
            return
        if self._sent != self._sent_seen:
            self._sent_seen, self._last_out = self._sent, now
        if not self.subscriptions and now - self._last_in > idle:
            self.begin_close(CloseCode.IDLE, "idle: no subscription and no message")
        elif now - self._last_out >= heartbeat:
            self.send_bytes(frames.heartbeat())
            self._sent_seen, self._last_out = self._sent, now

    async def _reader(self) -> None:
        if self._first is not None:
            first, self._first = self._first, None
            if isinstance(first, protocol.InvalidMessage):
                self.send_bytes(frames.error(first, first.request_id))
            else:
                await self.handle(first)
        wire = self.wire
        wire.on_message(self.receive_now)  # from here, what comes while the loop below waits is handled as it comes
        while True:
            if wire.paused:
                await wire.drained()  # replies wait for the client to read them: back-pressure on what it sends
            raw = await receive_frame(self._receive)
            self._last_in = time.monotonic()
            if self.state is not State.OPEN:
                continue
            try:
                message = protocol.parse(raw)
            except protocol.InvalidMessage as exc:
                self.send_bytes(frames.error(exc, exc.request_id))
                continue
            await self.handle(message)

    # messages

    async def handle(self, message: protocol.Message) -> None:
        if message.op != "subscribe":
            self.handle_now(message)
            return
        with self._answering(message):
            self._same_token(message)
            await self.subscribe(message)

    def handle_now(self, message: protocol.Message) -> None:
        """Every message but a subscribe (which awaits its snapshot): a command is started in a task of its own."""
        with self._answering(message):
            self._same_token(message)
            if message.op == "unsubscribe":
                self.unsubscribe(message)
            elif message.op == "ping":
                self.send_bytes(frames.pong(message.id))
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
                self.context.make_way()
            else:
                raise RtError(f"unknown op {message.op!r}", status=400, code="BAD_REQUEST")

    def receive_now(self, raw: str | bytes) -> bool:
        """A message offered as it arrives, while the reader waits for one (`Wire.on_message`): handled here unless
        it is a subscribe or not a valid message, which the reader answers (False leaves it to the reader)."""
        if self.state is not State.OPEN or self.wire.paused:
            return False
        try:
            message = protocol.parse(raw)
        except protocol.InvalidMessage:
            return False
        if message.op == "subscribe":
            return False
        self._last_in = time.monotonic()
        try:
            self.handle_now(message)
        except Exception:
            self._failed()
        return True

    @contextlib.contextmanager
    def _answering(self, message: protocol.Message) -> Iterator[None]:
        """A refusal, or a store or bus that is unavailable, is the answer to `message`; anything else fails the
        session."""
        try:
            yield
        except RtError as exc:
            self.send_bytes(frames.error(exc, message.id))
        except Exception as exc:
            unavailable = outage(exc)
            if unavailable is None:
                raise
            self.send_bytes(frames.error(unavailable, message.id))

    def _same_token(self, message: protocol.Message) -> None:
        if message.token is not None and message.op != "auth" and not self._own_token(message.token):
            raise RtError(
                "this session is authenticated with another token; open a new connection to use this one",
                status=400,
                code="BAD_REQUEST",
            )

    def _own_token(self, token: str) -> bool:
        """Kraken clients repeat the session's token in every subscribe: that one is accepted (it is spent and grants
        nothing more); another token would be a second identity on one socket, so it is refused and left unspent."""
        return self._token is not None and hmac.compare_digest(token.encode(), self._token.encode())

    def _throttle(self) -> None:
        tier = self.context.tiers[self.principal.tier]
        decision, new_tat = gcra(time.monotonic(), self._tat, tier.per_minute, tier.burst)
        if new_tat is not None:
            self._tat = new_tat
            self._refused = 0
            return
        self._refused += 1
        if self._refused >= ABUSE_LIMIT:
            self.begin_close(CloseCode.RATE_LIMITED, "command rate limit")
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
                status, body, _ = await self.context.idempotency.once(
                    self.principal.account_id,
                    key,
                    fingerprint(op, params),
                    lambda: self._as_pair(op, handler, params),
                )
                if status >= 400:
                    self.send_bytes(frames.error_body(message.id, body))
                    return
            self.context.sessions.observe_command(op, (now_us() - time_in) / 1000)
            self.send_bytes(frames.result(message.id, time_in, body))
        except RtError as exc:
            self.send_bytes(frames.error(exc, message.id, time_in))
        except Exception as exc:
            error: RtError | None = outage(exc)
            if error is None:
                log.exception("command failed", extra={"op": op})
                error = RtError("the server failed to run this command")
            self.send_bytes(frames.error(error, message.id, time_in))

    async def _as_pair(self, op: str, handler: commands.Command, params: dict[str, Any]) -> tuple[int, bytes]:
        try:
            result = await handler(self, params)
            return commands.answer_status(op, result), commands.encode(result)
        except RtError as exc:
            return exc.status, frames.message(exc.problem())

    async def subscribe(self, message: protocol.Message) -> None:
        channel = message.channel
        if not channel:
            raise RtError("subscribe needs a `channel`", status=400, code="BAD_REQUEST")
        scope = protocol.channel_scope(channel)
        protocol.require(self.principal.scopes, scope)
        if channel in self.subscriptions:
            raise RtError(f"already subscribed to {channel}", status=400, code="BAD_REQUEST")
        await self.context.sessions.attach(self, channel, message.id, message.since)

    def unsubscribe(self, message: protocol.Message) -> None:
        channel = message.channel or ""
        subscription = self.subscriptions.get(channel)
        if subscription is None or not subscription.started:
            raise RtError(f"not subscribed to {channel!r}", status=400, code="BAD_REQUEST")
        del self.subscriptions[channel]
        subscription.close()
        self.send_bytes(frames.unsubscribed(channel, message.id))

    async def cancel_after(self, timeout_s: int) -> dict[str, Any]:
        return await self.context.sessions.cancel_after(self.principal.account_id, timeout_s)

    # dead man's switch

    async def configure(self, cancel_on_disconnect: bool) -> None:
        """On: this session is kept in the durable switch before the answer, so its orders are canceled even when
        this instance dies; off: it is dropped from it."""
        deadman = self.context.sessions.deadman
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
            await self.context.sessions.deadman.placed(self.session_id, order_id)
        except Exception as exc:
            # The order is placed: its answer goes out, and the next heartbeat writes the session again whole.
            self.unsaved = True
            log.warning("recording an order for cancel_on_disconnect failed", extra={"error": type(exc).__name__})

    async def save_watch(self) -> None:
        """Write this session into the durable switch again, whole (after its record was lost or left behind)."""
        await self.context.sessions.deadman.forget(self.session_id)
        await self.context.sessions.deadman.watch(self.session_id, self.principal.account_id, self._mine)
        self.unsaved = False

    async def _cancel_mine(self) -> None:
        """A clean close: cancel here and now, then drop the session from the durable switch. Should this fail or
        this instance die first, the record stays and the holder of the `deadman` role cancels them."""
        from rt.session.manager import cancel_orders

        book = self.engine.cached_book(self.principal.account_id)
        still_open = [i for i in self._mine if book is None or i in book.orders]
        await cancel_orders(self.engine, self.principal.account_id, still_open)
        try:
            await self.context.sessions.deadman.forget(self.session_id)
        except Exception as exc:
            log.warning(
                "dropping a closed session from the dead man's switch failed", extra={"error": type(exc).__name__}
            )
