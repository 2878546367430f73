"""A session's way out, without a socket: straight to the wire while the client keeps up, a bounded queue sent as
arrays once it drains when it is behind, 4008 for a client that stays behind, and replies that slow the reader
instead of closing it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.frames import Frame, Opcode

from rt.auth.principal import Principal
from rt.config import Settings
from rt.runtime import Runtime, open_runtime
from rt.session import frames
from rt.session.connection import Session, State
from rt.session.protocol import CloseCode
from tests.channels.sinks import tick
from tests.session.wires import RecordingWire


@contextlib.asynccontextmanager
async def running(data_dir: Path, **overrides: Any) -> AsyncIterator[Runtime]:
    settings = Settings(data_dir=str(data_dir), bootstrap=False, paper_tick_ms=0, **overrides)
    async with open_runtime(settings) as runtime:
        yield runtime


class Socket:
    """Frames the client sends, handed out as the session reads them; the end is the client going away."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[str | None] = asyncio.Queue()
        self.reads = 0

    async def receive(self) -> dict[str, Any]:
        frame = await self.frames.get()
        self.reads += 1
        if frame is None:
            return {"type": "websocket.disconnect", "code": 1000}
        return {"type": "websocket.receive", "text": frame}


def session(runtime: Runtime, *, batch: bool = True) -> tuple[Session, RecordingWire, Socket]:
    wire, socket = RecordingWire(), Socket()
    principal = Principal("acct_1", "key_1", frozenset({"ws:connect", "market:read"}), "pro_plus", False)
    return Session(socket.receive, runtime.sessions.context, principal, wire, batch=batch), wire, socket


async def test_a_client_that_keeps_up_gets_each_event_as_the_frame_every_subscriber_shares(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        (a, wire_a, _), (b, wire_b, _) = session(runtime), session(runtime)
        out = tick(1)
        a.offer(out)
        b.offer(out)
        assert wire_a.framed == wire_b.framed == [out.framed]
        assert wire_a.framed[0] is wire_b.framed[0]  # built once
        assert a.queue_depth == b.queue_depth == 0


@pytest.mark.parametrize("batch", [True, False], ids=["batch", "batch=0"])
async def test_a_client_behind_gets_what_was_queued_in_order_once_it_drains(tmp_path: Path, batch: bool) -> None:
    async with running(tmp_path) as runtime:
        s, wire, _ = session(runtime, batch=batch)
        wire.pause()
        for seq in range(1, 301):
            s.offer(tick(seq))
        s.send({"type": "pong", "id": 7})
        assert wire.writes == [] and s.queue_depth == 301
        wire.resume()
        assert s.queue_depth == 0
        # 256 messages at most per array: two writes batched, one per message with batch=0.
        assert len(wire.writes) == (2 if batch else 301)
        messages = wire.messages()
        assert [m["seq"] for m in messages[:-1]] == list(range(1, 301))
        assert messages[-1] == {"type": "pong", "id": 7}
        s.offer(tick(301))  # caught up: straight to the wire again
        assert len(wire.writes) == 1 and s.queue_depth == 0


async def test_a_full_queue_closes_with_4008_and_drops_what_was_queued(tmp_path: Path) -> None:
    async with running(tmp_path, ws_queue=10) as runtime:
        s, wire, _ = session(runtime)
        closes = runtime.sessions.slow_consumer_closes
        wire.pause()
        for seq in range(1, 12):
            s.offer(tick(seq))
        assert wire.close_code == CloseCode.SLOW_CONSUMER and "slow consumer" in wire.close_reason
        assert runtime.sessions.slow_consumer_closes == closes + 1
        assert s.queue_depth == 0 and s.state is State.CLOSING
        wire.resume()
        s.offer(tick(12))
        assert wire.writes == []  # nothing after the close frame, nothing of what was queued


async def test_a_client_behind_for_longer_than_the_stall_limit_is_closed_on_the_next_event(tmp_path: Path) -> None:
    async with running(tmp_path, ws_stall_s=2.0) as runtime:
        s, wire, _ = session(runtime)
        wire.pause(ago=1.0)
        s.offer(tick(1))
        assert wire.close_code is None  # behind for a second: still in time
        wire.pause(ago=2.5)
        s.offer(tick(2))
        assert wire.close_code == CloseCode.SLOW_CONSUMER


async def test_the_clock_closes_a_client_stuck_behind_even_when_no_event_comes(tmp_path: Path) -> None:
    async with running(tmp_path, ws_stall_s=2.0) as runtime:
        s, wire, _ = session(runtime)
        wire.pause()
        s.offer(tick(1))  # the last event for a while: the channel goes quiet
        loop_now = wire.paused_at
        s.on_clock(loop_now + 1.0, heartbeat=15, idle=60)
        assert wire.close_code is None
        s.on_clock(loop_now + 2.5, heartbeat=15, idle=60)
        assert wire.close_code == CloseCode.SLOW_CONSUMER


async def test_a_close_after_what_is_queued_waits_for_it_or_goes_when_the_client_stays_stuck(tmp_path: Path) -> None:
    async with running(tmp_path, ws_stall_s=2.0) as runtime:
        s, wire, _ = session(runtime)
        wire.pause()
        s.send_bytes(frames.shutdown())
        s.begin_close(CloseCode.GOING_AWAY, "server shutting down")
        assert wire.close_code is None
        wire.resume()
        assert [m["event"] for m in wire.messages()] == ["server.shutdown"]
        assert wire.close_code == CloseCode.GOING_AWAY

        stuck, stuck_wire, _ = session(runtime)
        stuck_wire.pause()
        stuck.send_bytes(frames.shutdown())
        stuck.begin_close(CloseCode.GOING_AWAY, "server shutting down")
        stuck.on_clock(stuck_wire.paused_at + 3.0, heartbeat=15, idle=60)
        assert stuck_wire.close_code == CloseCode.GOING_AWAY  # its code, not 4008: it is closed for shutting down


async def test_pipelined_pings_slow_the_reader_down_and_are_all_answered(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        s, wire, socket = session(runtime)
        reader = asyncio.create_task(s.run())
        wire.pause()  # the client reads slower than it writes
        for n in range(1100):
            socket.frames.put_nowait(orjson.dumps({"op": "ping", "id": n}).decode())
        for _ in range(20):
            await asyncio.sleep(0)
        assert socket.reads == 0  # while the client is behind, what it sent waits in its socket
        wire.resume()
        wire.pause()  # it reads a little, then is behind again
        for _ in range(20):
            await asyncio.sleep(0)
        assert socket.reads == 1 and s.queue_depth == 1  # one ping read, its pong queued, and the reader waits
        wire.resume()
        socket.frames.put_nowait(None)  # the client leaves after its pings
        await asyncio.wait_for(reader, 5)
        pongs = [m["id"] for m in wire.messages() if m["type"] == "pong"]
        assert pongs == list(range(1100))
        assert wire.close_code is None


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 70_000])
def test_a_frame_is_what_the_websockets_library_itself_would_send(size: int) -> None:
    payload = b"x" * size
    assert frames.text_frame(payload) == Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])


async def test_a_client_that_left_is_not_a_slow_consumer(tmp_path: Path) -> None:
    async with running(tmp_path, ws_queue=5) as runtime:
        s, wire, _ = session(runtime)
        closes = runtime.sessions.slow_consumer_closes
        wire.pause()
        s.offer(tick(1))
        wire.close(1000, "")  # the client closed (or dropped) while behind
        wire.pause(ago=60)  # and its buffer will never drain
        for seq in range(2, 20):
            s.offer(tick(seq))
        assert runtime.sessions.slow_consumer_closes == closes and wire.close_code == 1000


async def test_a_client_behind_only_on_answers_to_its_own_messages_is_slowed_not_closed(tmp_path: Path) -> None:
    async with running(tmp_path, ws_stall_s=2.0) as runtime:
        s, wire, _ = session(runtime)
        wire.pause()
        for n in range(5):
            s.send_bytes(frames.pong(n))
        s.on_clock(wire.paused_at + 10.0, heartbeat=15, idle=60)
        assert wire.close_code is None and s.queue_depth == 5
        wire.resume()
        assert [m["id"] for m in wire.messages()] == [0, 1, 2, 3, 4]


async def test_a_shutdown_whose_grace_ran_out_closes_a_client_still_behind(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        s, wire, _ = session(runtime)
        wire.pause()
        s.send_bytes(frames.shutdown())
        s.begin_close(CloseCode.GOING_AWAY, "server shutting down")
        assert wire.close_code is None
        s.close_now()
        assert wire.close_code == CloseCode.GOING_AWAY and wire.writes == []


async def test_a_message_offered_as_it_arrives_is_answered_without_the_reader_and_in_its_order(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        s, wire, socket = session(runtime)
        reader = asyncio.create_task(s.run())
        await asyncio.sleep(0)  # the reader waits for the client's first message
        assert wire.arrive(orjson.dumps({"op": "ping", "id": 1}).decode())
        assert wire.arrive(orjson.dumps({"op": "ping", "id": 2}).decode())
        assert [(m["type"], m["id"]) for m in wire.messages()] == [("pong", 1), ("pong", 2)]  # there and then
        assert socket.reads == 0 and not reader.done()
        socket.frames.put_nowait(None)
        await asyncio.wait_for(reader, 5)


async def test_a_command_offered_as_it_arrives_starts_at_once_and_is_answered(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        s, wire, socket = session(runtime)
        reader = asyncio.create_task(s.run())
        await asyncio.sleep(0)
        assert wire.arrive(orjson.dumps({"op": "session.configure", "id": "c1", "params": {}}).decode())
        assert len(s._tasks) == 1  # started before the reader would have woken
        await s.finish_commands(5)
        [answer] = wire.messages()
        assert (answer["type"], answer["id"]) == ("error", "c1")  # this key lacks orders:write: answered all the same
        assert answer["error"]["code"] == "INSUFFICIENT_SCOPE"
        socket.frames.put_nowait(None)
        await asyncio.wait_for(reader, 5)


@pytest.mark.parametrize(
    "raw",
    [
        '{"op": "subscribe", "id": 1, "channel": "ticks:BTC/USDT"}',  # it awaits its snapshot: the reader's
        '{"op": "ping", "id": [1]}',  # not a valid message: the reader answers it
        "{not json",
    ],
)
async def test_a_subscribe_or_an_invalid_message_is_left_to_the_reader(tmp_path: Path, raw: str) -> None:
    async with running(tmp_path) as runtime:
        s, wire, socket = session(runtime)
        reader = asyncio.create_task(s.run())
        await asyncio.sleep(0)
        assert not wire.arrive(raw)
        assert wire.messages() == []
        socket.frames.put_nowait(raw)  # where the transport puts what the session declined
        socket.frames.put_nowait(None)
        await asyncio.wait_for(reader, 5)
        answers = wire.messages()
        assert answers[0]["type"] == ("subscribed" if "subscribe" in raw else "error")


async def test_a_client_behind_or_a_session_closing_leaves_what_it_sends_to_the_reader(tmp_path: Path) -> None:
    async with running(tmp_path) as runtime:
        s, wire, socket = session(runtime)
        reader = asyncio.create_task(s.run())
        await asyncio.sleep(0)
        ping = orjson.dumps({"op": "ping", "id": 1}).decode()
        wire.pause()
        assert not wire.arrive(ping)  # back-pressure: the reader waits for the client to read before it reads on
        wire.resume()
        s.begin_close(CloseCode.NORMAL, "bye")
        assert not wire.arrive(ping)
        socket.frames.put_nowait(None)
        await asyncio.wait_for(reader, 5)


async def test_a_message_offered_as_it_arrives_that_fails_the_session_closes_it_with_1011(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path) as runtime:
        s, wire, socket = session(runtime)
        reader = asyncio.create_task(s.run())
        await asyncio.sleep(0)

        def broken(message: Any) -> bytes:
            raise ValueError("broken")

        monkeypatch.setattr(frames, "pong", broken)
        assert wire.arrive(orjson.dumps({"op": "ping", "id": 1}).decode())  # taken: it never reaches the reader
        assert wire.close_code == CloseCode.INTERNAL
        assert any(r.message == "session failed" and r.exc_info for r in caplog.records)
        socket.frames.put_nowait(None)
        await asyncio.wait_for(reader, 5)
