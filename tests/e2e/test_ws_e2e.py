"""End to end over a real socket against `rt serve` with the `websockets` client: tokens, channels, seq and resume,
commands, the dead man's switch, timers, caps, slow consumers, shutdown, batching, metrics and Redis scale-out
(SPEC §6)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from rt.auth.tokens import TOKEN_TTL
from rt.bus.memory import MemoryBus
from rt.channels.hub import Hub, Subscription
from rt.config import Settings
from rt.records.events import Event
from rt.runtime import open_runtime
from rt.session.frames import Outgoing
from tests.conftest import need_postgres, need_redis
from tests.e2e.server import Server, free_port, run_server
from tests.pg import database

pytestmark = pytest.mark.e2e

Message = dict[str, Any]

SYMBOLS = "BTC/USDT=46200,ETH/USDT=3500,SOL/USDT=150"
ENV = {
    "RT_PAPER_TICK_MS": "0",
    "RT_PAPER_SYMBOLS": SYMBOLS,
    "RT_PAPER_FEE": "0.001",
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
    "RT_LOCKOUT_THRESHOLD": "100000",
    "RT_TRUSTED_PROXIES": "127.0.0.1",
}
# Far below the market, so a buy limit rests.
RESTING = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 1000}
MARKET = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 0.01}


# servers and keys


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, metrics_port: int) -> Iterator[Server]:
    env = {**ENV, "RT_METRICS_PORT": str(metrics_port)}
    with run_server(tmp_path_factory.mktemp("ws") / "data", env) as started:
        yield started


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Short heartbeat and idle timeouts and two sessions per key."""
    env = {**ENV, "RT_WS_HEARTBEAT_S": "1", "RT_WS_IDLE_S": "2", "RT_WS_MAX_PER_KEY": "2"}
    with run_server(tmp_path_factory.mktemp("tight") / "data", env) as started:
        yield started


@dataclass(frozen=True)
class Key:
    id: str
    key: str
    account_id: str


async def new_account(server: Server, *scope_specs: str, allow_ips: str = "") -> list[Key]:
    """A fresh account (so seqs start at zero) with one key per scope spec; made on the server's data dir,
    as `rt accounts create` and `rt keys create` would, without a subprocess per call."""
    async with open_runtime(Settings(data_dir=str(server.data_dir))) as runtime:
        account = await runtime.keys.create_account(f"ws-{uuid.uuid4().hex[:10]}", actor="test")
        made = []
        for spec in scope_specs:
            issued = await runtime.keys.create(account.id, spec, "pro_plus", allow_ips=allow_ips or None, actor="test")
            made.append(Key(issued.record.id, issued.key, account.id))
    for key in made:
        async with rest(server, key) as http:

            async def known(http: httpx.AsyncClient = http) -> bool:
                # SPEC §1: a key made on the data dir works on the running server within a second.
                return (await http.get("/v1/account")).status_code != 401

            await eventually(known, within=5)
    return made


async def full_key(server: Server) -> Key:
    return (await new_account(server, "full"))[0]


def rest(server: Server, key: Key | str, **headers: str) -> httpx.AsyncClient:
    plain = key.key if isinstance(key, Key) else key
    return httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": plain, **headers}, timeout=10)


async def ws_token(server: Server, key: Key, **headers: str) -> str:
    async with rest(server, key, **headers) as http:
        response = await http.post("/v1/ws/token")
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def place(http: httpx.AsyncClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    order: dict[str, Any] = ok(await http.post("/v1/orders", json=body or MARKET), 201)["order"]
    return order


async def order_status(http: httpx.AsyncClient, order_id: str) -> str:
    return str(ok(await http.get(f"/v1/orders/{order_id}"))["order"]["status"])


async def eventually(check: Callable[[], Any], within: float = 5.0) -> None:
    """Poll an async predicate until it holds (the behaviour has a deadline, the test does not measure it)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


# the socket


class Conn:
    """A websockets client that hands out one message at a time, whether the server batched them or not."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Any] = []
        self.messages: list[Message] = []  # everything received, in order, whether handed out or skipped
        self._pending: deque[Message] = deque()

    async def send(self, **message: Any) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def recv(self, within: float = 5.0) -> Message:
        while not self._pending:
            decoded = orjson.loads(await asyncio.wait_for(self.ws.recv(), within))
            self.frames.append(decoded)
            batch = decoded if isinstance(decoded, list) else [decoded]
            self.messages.extend(batch)
            self._pending.extend(batch)
        return self._pending.popleft()

    async def next(self, kind: str, within: float = 5.0, **fields: Any) -> Message:
        """The next message of this type with these fields; others are skipped."""
        deadline = time.monotonic() + within
        while True:
            message = await self.recv(max(deadline - time.monotonic(), 0.01))
            if message["type"] == kind and all(message.get(k) == v for k, v in fields.items()):
                return message

    async def call(self, op: str, request_id: Any = None, **params: Any) -> Message:
        """A command and its answer: the `result` or `error` with its id."""
        request_id = request_id if request_id is not None else f"c-{uuid.uuid4().hex[:8]}"
        await self.send(op=op, id=request_id, params=params)
        while True:
            message = await self.recv()
            if message["type"] in ("result", "error") and message.get("id") == request_id:
                return message

    async def subscribe(self, channel: str, since: int | None = None) -> tuple[Message, Message]:
        """subscribed, then the snapshot (or the first replayed event)."""
        await self.send(
            op="subscribe", channel=channel, id=f"sub-{channel}", **({} if since is None else {"since": since})
        )
        subscribed = await self.next("subscribed", channel=channel)
        return subscribed, await self.recv()

    async def ping(self) -> None:
        """A round trip: everything the server queued before it has been read when this returns."""
        ping_id = f"p-{uuid.uuid4().hex[:8]}"
        await self.send(op="ping", id=ping_id)
        await self.next("pong", id=ping_id)

    def seqs(self, channel: str) -> list[int]:
        return [m["seq"] for m in self.messages if m["type"] == "event" and m.get("channel") == channel]

    async def until_seqs(self, last: dict[str, int], within: float = 5.0) -> None:
        """Read until every channel has reached its seq."""
        deadline = time.monotonic() + within
        while any(max(self.seqs(c), default=0) < seq for c, seq in last.items()):
            await self.recv(max(deadline - time.monotonic(), 0.01))

    async def close_code(self, within: float = 10.0) -> int | None:
        """Read until the server closes the socket; its close code."""
        try:
            while True:
                await self.recv(within)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd is not None else None

    def kill(self) -> None:
        """Drop the TCP connection without a close handshake, as a crashed client would."""
        self.ws.transport.abort()


def ws_url(server: Server) -> str:
    return server.url.replace("http://", "ws://", 1) + "/v1/ws"


@contextlib.asynccontextmanager
async def connect(
    server: Server,
    key: Key | None = None,
    *,
    token: str | None = None,
    query: str = "",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    **options: Any,
) -> AsyncIterator[Conn]:
    """A session: `?token=` from a new token of `key`, or the given token, or none (first-message auth)."""
    if token is None and key is not None:
        token = await ws_token(server, key)
    params = [f"token={token}"] if token is not None else []
    params += [query] if query else []
    url = ws_url(server) + ("?" + "&".join(params) if params else "")
    async with websockets.connect(url, additional_headers=headers, open_timeout=10, **options) as ws:
        yield Conn(ws)


async def last_seqs(server: Server, key: Key, *channels: str) -> dict[str, int]:
    """Each channel's current seq, as a new subscriber is told it."""
    async with connect(server, key) as probe:
        return {channel: (await probe.subscribe(channel))[0]["seq"] for channel in channels}


async def refused_with(server: Server, token: str | None, first: Message | None = None) -> int | None:
    async with connect(server, token=token) as conn:
        if first is not None:
            await conn.send(**first)
        return await conn.close_code()


def events(messages: list[Message], channel: str) -> list[Message]:
    return [m for m in messages if m["type"] == "event" and m.get("channel") == channel]


# tokens


async def test_a_token_is_issued_for_fifteen_minutes_and_only_to_keys_with_ws_connect(server: Server) -> None:
    full, positions_only = await new_account(server, "full", "positions:read,orders:read")
    async with rest(server, full) as http:
        body = ok(await http.post("/v1/ws/token"))
        again = ok(await http.post("/v1/ws/token"))
    assert set(body) == {"token", "expires"}
    assert body["expires"] == TOKEN_TTL == 900
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    assert again["token"] != body["token"]
    assert full.key not in body["token"]

    async with rest(server, positions_only) as http:
        denied = await http.post("/v1/ws/token")
    assert denied.status_code == 403
    assert denied.json()["code"] == "INSUFFICIENT_SCOPE"


async def test_a_token_works_once(server: Server) -> None:
    key = await full_key(server)
    token = await ws_token(server, key)
    async with connect(server, token=token) as conn:
        subscribed, snapshot = await conn.subscribe("orders")
        assert subscribed["seq"] == 0 and snapshot["type"] == "snapshot"
        # Even while the first session is open, the token is spent.
        assert await refused_with(server, token) == 4001
        await conn.ping()
    assert await refused_with(server, token) == 4001


async def test_a_garbage_token_or_the_api_key_itself_is_refused_with_4001(server: Server) -> None:
    key = await full_key(server)
    assert await refused_with(server, "not-a-token") == 4001
    assert await refused_with(server, "") == 4001
    assert await refused_with(server, key.key) == 4001
    assert await refused_with(server, None, {"op": "auth", "token": key.key}) == 4001
    assert await refused_with(server, None, {"op": "auth", "token": "nope"}) == 4001


async def test_first_message_auth(server: Server) -> None:
    key = await full_key(server)
    token = await ws_token(server, key)
    async with connect(server) as conn:
        await conn.send(op="auth", token=token)
        subscribed, snapshot = await conn.subscribe("positions")
        assert subscribed["channel"] == "positions" and snapshot["data"] == {"positions": []}
        await conn.send(op="auth", token=token, id="again")
        assert (await conn.next("error", id="again"))["error"]["code"] == "BAD_REQUEST"
    # The token was spent by the auth message.
    assert await refused_with(server, token) == 4001
    # A first message that is not `auth` ends the session.
    assert await refused_with(server, None, {"op": "subscribe", "channel": "orders"}) == 4001


async def test_a_revoked_keys_open_session_is_closed_with_4001(server: Server) -> None:
    manager, doomed = await new_account(server, "full", "read-only")
    async with connect(server, doomed) as conn, connect(server, manager) as sibling:
        await conn.subscribe("positions")
        async with rest(server, manager) as http:
            ok(await http.delete(f"/v1/keys/{doomed.id}"))
        error = await conn.next("error", within=5)
        assert (error["error"]["status"], error["error"]["code"]) == (401, "API_KEY_REVOKED")
        assert await conn.close_code() == 4001
        # The other key's session on the same account stays open.
        await sibling.ping()
    async with rest(server, doomed) as http:
        assert (await http.post("/v1/ws/token")).json()["code"] == "API_KEY_REVOKED"


async def test_the_keys_ip_allowlist_applies_to_its_tokens(server: Server) -> None:
    (key,) = await new_account(server, "full", allow_ips="10.9.0.0/16")
    inside, outside = {"X-Forwarded-For": "10.9.1.1"}, {"X-Forwarded-For": "203.0.113.5"}
    async with rest(server, key, **outside) as http:
        assert (await http.post("/v1/ws/token")).json()["code"] == "IP_NOT_ALLOWED"

    token = await ws_token(server, key, **inside)
    async with connect(server, token=token, headers=outside) as conn:
        assert await conn.close_code() == 4001
    token = await ws_token(server, key, **inside)
    async with connect(server, headers=outside) as conn:
        await conn.send(op="auth", token=token)
        assert await conn.close_code() == 4001
    # A proxy that appends its own X-Forwarded-For line leaves the client's (here forged) line first: the lines are
    # one list, and the client is the right-most untrusted hop, in the last line.
    token = await ws_token(server, key, **inside)
    appended = [("X-Forwarded-For", "10.9.1.1"), ("X-Forwarded-For", "203.0.113.5")]
    async with connect(server, token=token, headers=appended) as conn:
        assert await conn.close_code() == 4001
    # From an allowed address the token opens a session.
    token = await ws_token(server, key, **inside)
    async with connect(server, token=token, headers={"X-Forwarded-For": "10.9.200.7"}) as conn:
        await conn.ping()


# channels


async def test_subscribed_then_snapshot_then_events_with_seq_per_channel(server: Server) -> None:
    key = await full_key(server)
    async with rest(server, key) as http:
        resting = await place(http, RESTING)
        async with connect(server, key) as conn:
            await conn.send(op="subscribe", channel="orders", id="o")
            subscribed = await conn.recv()
            snapshot = await conn.recv()
            assert subscribed == {"type": "subscribed", "channel": "orders", "id": "o", "seq": 1}
            assert snapshot["type"] == "snapshot" and snapshot["channel"] == "orders" and snapshot["seq"] == 1
            assert [o["id"] for o in snapshot["data"]["orders"]] == [resting["id"]]
            assert "reset" not in snapshot
            _, positions = await conn.subscribe("positions")
            assert positions["seq"] == 0 and positions["data"] == {"positions": []}
            _, everything = await conn.subscribe("events")
            assert everything["seq"] >= 2
            assert {"account", "positions", "orders"} <= set(everything["data"])

            first = await place(http)
            position = ok(
                await http.post(
                    "/v1/positions",
                    json={"exchange": "paper", "symbol": "ETH/USDT", "side": "long", "quantity": 0.01},
                ),
                201,
            )["position"]
            ok(await http.post(f"/v1/positions/{position['id']}/close"))
            await conn.until_seqs(await last_seqs(server, key, "orders", "positions", "events"))
            seen = conn.messages
    now_us = time.time_ns() // 1000

    orders = events(seen, "orders")
    assert [m["seq"] for m in orders] == list(range(2, 2 + len(orders)))
    assert ("order.created", first["id"]) in [(m["event"], m["data"]["id"]) for m in orders]
    assert ("order.filled", first["id"]) in [(m["event"], m["data"]["id"]) for m in orders]
    created = [m["event"] for m in orders if m["data"]["id"] == first["id"]]
    assert created.index("order.created") < created.index("order.filled")

    opened = events(seen, "positions")
    assert [m["seq"] for m in opened] == list(range(1, 1 + len(opened)))
    assert ("position.opened", position["id"]) in [(m["event"], m["data"]["id"]) for m in opened]
    assert ("position.closed", position["id"]) in [(m["event"], m["data"]["id"]) for m in opened]

    everything_seen = events(seen, "events")
    start = everything["seq"] + 1
    assert [m["seq"] for m in everything_seen] == list(range(start, start + len(everything_seen)))
    assert len(everything_seen) >= len(orders) + len(opened)
    for message in [*orders, *opened, *everything_seen]:
        assert set(message) == {"type", "channel", "seq", "event", "ts", "data"}
        # epoch microseconds: the server's clock, so within a minute of ours (ms or s would be off by 1000x)
        assert abs(message["ts"] - now_us) < 60_000_000


async def test_channel_scopes_and_unknown_channels(server: Server) -> None:
    read_only, trade_only = await new_account(server, "read-only", "trade-only")
    async with connect(server, read_only) as conn:
        subscribed, snapshot = await conn.subscribe("ticks:BTC/USDT")
        assert subscribed["seq"] == snapshot["seq"]
        assert snapshot["data"]["symbol"] == "BTC/USDT" and snapshot["data"]["last"] == 46200
        assert snapshot["data"]["bid"] < snapshot["data"]["ask"]
        for channel in ("positions", "orders", "risk", "account", "events", "strategies"):
            _, snap = await conn.subscribe(channel)
            assert snap["type"] == "snapshot", snap
        await conn.send(op="subscribe", channel="orders", id="twice")
        assert (await conn.next("error", id="twice"))["error"]["code"] == "BAD_REQUEST"

        for channel in ("trades", "ticks:", "ticks:NOPE/USDT"):
            await conn.send(op="subscribe", channel=channel, id=channel)
            error = await conn.next("error", id=channel)
            assert (error["error"]["status"], error["error"]["code"]) == (400, "BAD_REQUEST")
        await conn.send(op="subscribe", id="no-channel")
        assert (await conn.next("error", id="no-channel"))["error"]["code"] == "BAD_REQUEST"

    async with connect(server, trade_only) as conn:
        _, snapshot = await conn.subscribe("ticks:ETH/USDT")
        assert snapshot["data"]["symbol"] == "ETH/USDT"
        for channel in ("positions", "orders", "account", "events", "risk"):
            await conn.send(op="subscribe", channel=channel, id=channel)
            error = await conn.next("error", id=channel)
            assert (error["error"]["status"], error["error"]["code"]) == (403, "INSUFFICIENT_SCOPE")
        await conn.ping()  # a refusal never closes the socket


async def test_unsubscribe_stops_events(server: Server) -> None:
    key = await full_key(server)
    async with rest(server, key) as http, connect(server, key) as quiet, connect(server, key) as control:
        await quiet.subscribe("orders")
        await control.subscribe("orders")
        await quiet.send(op="unsubscribe", channel="orders", id="u")
        unsubscribed = await quiet.next("unsubscribed")
        assert (unsubscribed["channel"], unsubscribed["id"]) == ("orders", "u")
        order = await place(http)
        seen_by_control = await control.next("event")
        assert seen_by_control["data"]["id"] == order["id"]
        await quiet.ping()
        assert [m for m in quiet.messages if m["type"] == "event"] == []
        await quiet.send(op="unsubscribe", channel="orders", id="u2")
        assert (await quiet.next("error", id="u2"))["error"]["code"] == "BAD_REQUEST"


# resume


async def test_resume_after_a_crash_sees_every_event_once_in_order(server: Server) -> None:
    """The issue's test: a client dies mid-stream while another keeps trading; it comes back with `since` and,
    across its two sockets, has seen every event exactly once, in order, with no gap."""
    key = await full_key(server)
    channels = ("positions", "orders", "events")
    placed: list[str] = []
    opened: list[str] = []

    async def trade(http: httpx.AsyncClient, rounds: int) -> None:
        for _ in range(rounds):
            placed.append((await place(http))["id"])
            body = {"exchange": "paper", "symbol": "SOL/USDT", "side": "long", "quantity": 1}
            position = ok(await http.post("/v1/positions", json=body), 201)["position"]
            opened.append(position["id"])
            ok(await http.post(f"/v1/positions/{position['id']}/close"))

    async with rest(server, key) as http:
        async with connect(server, key) as first:
            for channel in channels:
                subscribed, snapshot = await first.subscribe(channel)
                assert subscribed["seq"] == snapshot["seq"] == 0
            trader = asyncio.create_task(trade(http, 12))
            while len(first.seqs("events")) < 10:
                await first.recv()
            first.kill()
            before = {channel: first.seqs(channel) for channel in channels}
        assert not trader.done(), "the other client finished trading before the crash; trade more rounds"

        async with connect(server, key) as second:
            for channel in channels:
                since = max(before[channel], default=0)
                await second.send(op="subscribe", channel=channel, id=channel, since=since)
                subscribed = await second.next("subscribed", channel=channel)
                assert subscribed["id"] == channel
            await trader
            last = await last_seqs(server, key, *channels)
            await second.until_seqs(last)
            await second.ping()
            assert not [m for m in second.messages if m["type"] == "snapshot"], "a replay, not a snapshot"
            after = {channel: second.seqs(channel) for channel in channels}
            seen = first.messages + second.messages

    for channel in channels:
        assert before[channel], f"nothing seen on {channel} before the crash"
        assert before[channel] + after[channel] == list(range(1, last[channel] + 1)), channel
    created = [m["data"]["id"] for m in events(seen, "orders") if m["event"] == "order.created"]
    assert set(placed) <= set(created) and len(created) == len(set(created))
    for name in ("position.opened", "position.closed"):
        ids = [m["data"]["id"] for m in events(seen, "positions") if m["event"] == name]
        assert set(opened) <= set(ids) and len(ids) == len(set(ids)), name
    # The `events` channel carries each of the others' events too, in the same order.
    everything = [(m["event"], m["data"].get("id")) for m in events(seen, "events")]
    for channel in ("positions", "orders"):
        own = [(m["event"], m["data"].get("id")) for m in events(seen, channel)]
        assert [e for e in everything if e in set(own)] == own


async def test_since_at_the_head_replays_nothing_and_since_beyond_it_resets(server: Server) -> None:
    key = await full_key(server)
    async with rest(server, key) as http:
        await place(http, RESTING)
        async with connect(server, key) as conn:
            await conn.send(op="subscribe", channel="orders", id="o", since=1)
            await conn.ping()
            assert [(m["type"], m.get("seq")) for m in conn.messages] == [("subscribed", 1), ("pong", None)]

            # A seq this account never reached (e.g. from before a restart of an in-memory bus): a fresh snapshot.
            _, reset = await conn.subscribe("positions", since=10**9)
            assert reset["type"] == "snapshot" and reset["reset"] is True and reset["seq"] == 0

            _, replayed = await conn.subscribe("events", since=0)
            assert replayed["type"] == "event" and replayed["seq"] == 1


class FakeSession:
    """What Sessions.attach talks to, recording the messages it would send."""

    def __init__(self, account_id: str) -> None:
        self.principal = type("P", (), {"account_id": account_id})()
        self.sent: list[Message] = []
        self.subscriptions: dict[str, Subscription] = {}

    def send_bytes(self, payload: bytes) -> None:
        self.sent.append(orjson.loads(payload))

    def offer(self, out: Outgoing) -> None:
        self.send_bytes(out.payload)

    def fell_behind(self) -> None:
        raise AssertionError("a replay of three events is not too many")


async def test_since_older_than_history_sends_a_snapshot_with_reset(tmp_path: Path) -> None:
    """There is no setting for the history length, so this runs in process on a bus that keeps three events."""
    async with open_runtime(Settings(data_dir=str(tmp_path))) as runtime:
        bus = MemoryBus(history=3)
        runtime.bus = runtime.engine.bus = bus
        runtime.hub = Hub(bus)
        account = (await runtime.store.create_account("history")).id
        await bus.publish([Event(account, "order.created", {"id": f"ord_{n}"}) for n in range(1, 6)])

        old = FakeSession(account)
        await runtime.sessions.attach(old, "orders", "a", since=1)  # type: ignore[arg-type]
        assert [m["type"] for m in old.sent] == ["subscribed", "snapshot"]
        assert old.sent[1]["reset"] is True and old.sent[1]["seq"] == 5
        assert old.subscriptions["orders"].floor == 5

        recent = FakeSession(account)
        await runtime.sessions.attach(recent, "orders", "b", since=2)  # type: ignore[arg-type]
        assert [(m["type"], m.get("seq")) for m in recent.sent] == [
            ("subscribed", 5),
            ("event", 3),
            ("event", 4),
            ("event", 5),
        ]
        assert [m["data"]["id"] for m in recent.sent[1:]] == ["ord_3", "ord_4", "ord_5"]


# commands


def result_data(message: Message) -> Any:
    assert message["type"] == "result", message
    assert message["time_in"] <= message["time_out"]
    assert abs(message["time_in"] - time.time_ns() // 1000) < 60_000_000
    return message["data"]


def error_of(message: Message, status: int, code: str) -> Message:
    assert message["type"] == "error", message
    error: Message = message["error"]
    assert (error["status"], error["code"]) == (status, code), error
    return error


async def test_commands_run_the_same_code_as_rest(server: Server) -> None:
    key = await full_key(server)
    async with rest(server, key) as http, connect(server, key) as conn:
        order = result_data(await conn.call("order.place", "place-1", **RESTING))["order"]
        assert order["status"] == "open" and order["id"].startswith("ord_")
        assert ok(await http.get(f"/v1/orders/{order['id']}"))["order"] == order

        canceled = result_data(await conn.call("order.cancel", 2, order_id=order["id"]))["order"]
        assert (canceled["id"], canceled["status"]) == (order["id"], "canceled")
        assert await order_status(http, order["id"]) == "canceled"
        error_of(await conn.call("order.cancel", order_id=order["id"]), 409, "ORDER_NOT_OPEN")

        body = {"exchange": "paper", "symbol": "ETH/USDT", "side": "long", "quantity": 0.1}
        position = result_data(await conn.call("position.open", **body))["position"]
        assert position["status"] == "open" and position["id"].startswith("pos_")
        assert position["validation"]["cerberus_status"]
        updated = result_data(await conn.call("position.update", position_id=position["id"], stop_loss=3000))
        assert updated["position"]["stop_loss"] == 3000
        fetched = ok(await http.get(f"/v1/positions/{position['id']}"))["position"]
        assert fetched["stop_loss"] == 3000
        closed = result_data(await conn.call("position.close", position_id=position["id"]))["position"]
        assert closed["status"] == "closed"
        error_of(await conn.call("position.close", position_id="pos_nope"), 404, "NOT_FOUND")

        await place(http, RESTING)
        killed = result_data(await conn.call("emergency.kill", reason="test", confirm=True))
        assert killed["trading_state"] == "locked" and killed["orders_canceled"] == 1
        assert ok(await http.get("/v1/account"))["trading_state"] == "locked"
        error_of(await conn.call("order.place", **MARKET), 423, "TRADING_LOCKED")


async def test_commands_need_the_scope_of_their_rest_twin(server: Server) -> None:
    read_only, trade_only = await new_account(server, "read-only", "trade-only")
    async with connect(server, read_only) as conn:
        for op, params in (
            ("order.place", RESTING),
            ("order.cancel", {"order_id": "ord_x"}),
            ("position.open", {"symbol": "ETH/USDT", "side": "long", "quantity": 1}),
            ("emergency.kill", {"confirm": True}),
            ("session.configure", {"cancel_on_disconnect": True}),
            ("orders.cancel_after", {"timeout_s": 5}),
        ):
            error = error_of(await conn.call(op, **params), 403, "INSUFFICIENT_SCOPE")
            assert error["detail"]
    async with connect(server, trade_only) as conn:
        assert result_data(await conn.call("order.place", **RESTING))["order"]["status"] == "open"
        error_of(await conn.call("emergency.kill", confirm=True), 403, "INSUFFICIENT_SCOPE")


async def test_a_cerberus_rejection_is_validation_failed_with_details(server: Server) -> None:
    key = await full_key(server)
    async with connect(server, key) as conn:
        too_big = {**MARKET, "symbol": "BTC/USDT", "quantity": 1}  # 46,200 notional > 25,000 max_position_size
        error = error_of(await conn.call("order.place", **too_big), 422, "VALIDATION_FAILED")
        assert set(error["details"]) >= {"check", "reason", "limit", "requested"}
        assert error["details"]["check"] == "position_size"
        assert error["details"]["limit"] == 25000
        body = {"exchange": "paper", "symbol": "BTC/USDT", "side": "long", "quantity": 1}
        error_of(await conn.call("position.open", **body), 422, "VALIDATION_FAILED")
        error = error_of(
            await conn.call("order.place", symbol="BTC/USDT", side="sideways", quantity=1), 400, "BAD_REQUEST"
        )
        assert "side" in {e["field"] for e in error["errors"]}


async def test_an_idempotency_key_or_client_order_id_places_once(server: Server) -> None:
    key = await full_key(server)
    async with rest(server, key) as http, connect(server, key) as conn:
        first = result_data(await conn.call("order.place", **RESTING, idempotency_key="idem-1"))["order"]
        again = result_data(await conn.call("order.place", **RESTING, idempotency_key="idem-1"))["order"]
        assert again == first
        conflict = await conn.call("order.place", **{**RESTING, "price": 1001}, idempotency_key="idem-1")
        error_of(conflict, 409, "IDEMPOTENCY_CONFLICT")

        tagged = {**RESTING, "client_order_id": "bot-42"}
        one = result_data(await conn.call("order.place", **tagged))["order"]
        two = result_data(await conn.call("order.place", **tagged))["order"]
        assert one["id"] == two["id"] and one["client_order_id"] == "bot-42"
        # REST and the socket name the same command: the same client_order_id over REST replays the first answer,
        # whatever the JSON's spacing or key order.
        reordered = b'{"client_order_id": "bot-42", ' + orjson.dumps(RESTING)[1:]
        via_rest = await http.post("/v1/orders", content=reordered, headers={"Content-Type": "application/json"})
        # ... with the status the REST route gives it, whichever transport placed it first.
        assert via_rest.status_code == 201, via_rest.text
        assert via_rest.headers["idempotent-replayed"] == "true"
        assert via_rest.json()["order"]["id"] == one["id"]
        entry = {"exchange": "paper", "symbol": "ETH/USDT", "side": "long", "quantity": 0.01, "entry_price": 1000}
        rested = result_data(await conn.call("position.open", **entry, idempotency_key="entry-1"))["position"]
        replayed = await http.post("/v1/positions", json=entry, headers={"Idempotency-Key": "entry-1"})
        assert (replayed.status_code, replayed.headers["idempotent-replayed"]) == (202, "true"), replayed.text
        assert replayed.json()["position"] == rested
        other = await http.post("/v1/orders", json={**tagged, "quantity": 2})
        assert other.status_code == 409 and other.json()["code"] == "IDEMPOTENCY_CONFLICT"

        listed = ok(await http.get("/v1/orders", params={"status": "all"}))
        assert listed["total"] == 3
        assert {first["id"], one["id"]} < {o["id"] for o in listed["orders"]}


async def test_bad_input_gets_an_error_and_never_closes_the_socket(server: Server) -> None:
    key = await full_key(server)
    async with connect(server, key) as conn:
        await conn.send(op="order.place", params=RESTING)
        error = error_of(await conn.next("error"), 400, "BAD_REQUEST")
        assert "id" in error["detail"]
        error_of(await conn.call("order.explode", "u1"), 400, "BAD_REQUEST")
        await conn.send(op="dance", id="u2")
        error_of(await conn.next("error", id="u2"), 400, "BAD_REQUEST")
        error_of(await conn.call("order.place", "bad-params", nonsense=True), 400, "BAD_REQUEST")
        await conn.send(op="order.place", id="not-a-dict", params=[1, 2])
        error_of(await conn.next("error", id="not-a-dict"), 400, "BAD_REQUEST")
        for raw in ("{", "[]", '"ping"', "null", '{"op": "ping", "id": "x", "colour": 1}'):
            await conn.ws.send(raw)
            error_of(await conn.next("error"), 400, "BAD_REQUEST")
        await conn.ws.send(b'{"op": "ping", "id": "binary"}')
        await conn.next("pong", id="binary")
        await conn.ws.send('{"op": "ping", "id": "' + "x" * 40_000 + '"}')
        assert "larger than" in error_of(await conn.next("error"), 400, "BAD_REQUEST")["detail"]
        await conn.ping()
        assert not [m for m in conn.messages if m["type"] == "result"]


async def test_ping_answers_pong_with_its_id(server: Server) -> None:
    key = await full_key(server)
    async with connect(server, key) as conn:
        for ping_id in ("a", 7):
            await conn.send(op="ping", id=ping_id)
            pong = await conn.next("pong")
            assert pong["id"] == ping_id
        await conn.send(op="ping")
        assert (await conn.next("pong"))["id"] is None


# dead man's switch


async def test_cancel_on_disconnect_cancels_this_sessions_orders_when_it_drops(server: Server) -> None:
    key = await full_key(server)
    async with rest(server, key) as http:
        elsewhere = await place(http, RESTING)
        async with connect(server, key) as conn:
            configured = result_data(await conn.call("session.configure", cancel_on_disconnect=True))
            assert configured == {"cancel_on_disconnect": True}
            mine = result_data(await conn.call("order.place", **RESTING))["order"]
            filled = result_data(await conn.call("order.place", **MARKET))["order"]
            conn.kill()

        async def canceled() -> bool:
            return await order_status(http, mine["id"]) == "canceled"

        await eventually(canceled, within=3)
        # Only this session's open orders: one placed over REST stays, a filled one stays filled.
        assert await order_status(http, elsewhere["id"]) == "open"
        assert await order_status(http, filled["id"]) == "filled"

        # Turned off again, it leaves the orders alone; a sibling session that keeps it on shows when both are done.
        async with connect(server, key) as off, connect(server, key) as on:
            result_data(await off.call("session.configure", cancel_on_disconnect=True))
            result_data(await off.call("session.configure", cancel_on_disconnect=False))
            kept = result_data(await off.call("order.place", **RESTING))["order"]
            result_data(await on.call("session.configure", cancel_on_disconnect=True))
            marker = result_data(await on.call("order.place", **RESTING))["order"]

        async def marker_canceled() -> bool:
            return await order_status(http, marker["id"]) == "canceled"

        await eventually(marker_canceled, within=3)
        assert await order_status(http, kept["id"]) == "open"


async def test_cancel_on_disconnect_covers_commands_still_running_when_the_socket_goes(server: Server) -> None:
    """A burst of order.place and the socket gone right behind it: every command the server read still runs,
    and whatever it placed ends canceled."""

    async def burst(key: Key, delay: float | None) -> list[str]:
        async with connect(server, key) as conn:
            result_data(await conn.call("session.configure", cancel_on_disconnect=True))
            for n in range(15):  # fewer than max_concurrent_positions, which resting orders count against
                await conn.send(op="order.place", id=n, params=RESTING)
            if delay is None:
                await conn.ws.close()  # a clean close: the server reads every command before it
            else:
                await asyncio.sleep(delay)
                conn.kill()  # a crash: commands still unread are lost with the connection
        async with rest(server, key) as http:
            polls: list[int] = []

            async def open_orders_stay_at_zero() -> bool:
                polls.append(ok(await http.get("/v1/orders", params={"status": "open"}))["total"])
                return polls[-3:] == [0, 0, 0]

            await eventually(open_orders_stay_at_zero, within=10)
            listed = ok(await http.get("/v1/orders", params={"status": "all", "limit": 500}))["orders"]
        return [o["status"] for o in listed]

    keys = [await full_key(server) for _ in range(6)]
    closed, *crashed = await asyncio.gather(*(burst(key, None if n == 0 else n * 0.001) for n, key in enumerate(keys)))
    assert closed == ["canceled"] * 15
    assert all(set(statuses) <= {"canceled"} for statuses in crashed), crashed


async def test_cancel_after_cancels_every_open_order_unless_renewed_and_zero_turns_it_off(server: Server) -> None:
    async def lapses(key: Key) -> None:
        async with rest(server, key) as http, connect(server, key) as conn:
            orders = [await place(http, RESTING), result_data(await conn.call("order.place", **RESTING))["order"]]
            for _ in range(4):
                armed = result_data(await conn.call("orders.cancel_after", timeout_s=1))
                assert armed["timeout_s"] == 1
                assert abs(armed["trigger_at_ms"] - (time.time() * 1000 + 1000)) < 30_000
                await asyncio.sleep(0.4)
            assert [await order_status(http, o["id"]) for o in orders] == ["open", "open"]

            async def all_canceled() -> bool:
                return [await order_status(http, o["id"]) for o in orders] == ["canceled", "canceled"]

            await eventually(all_canceled, within=4)

    async def turned_off(key: Key) -> None:
        async with rest(server, key) as http, connect(server, key) as conn:
            order = await place(http, RESTING)
            result_data(await conn.call("orders.cancel_after", timeout_s=1))
            assert result_data(await conn.call("orders.cancel_after", timeout_s=0)) == {
                "timeout_s": 0,
                "trigger_at_ms": None,
            }
            await asyncio.sleep(1.6)
            assert await order_status(http, order["id"]) == "open"
            error_of(await conn.call("orders.cancel_after", timeout_s=-1), 400, "BAD_REQUEST")

    first, second = await full_key(server), await full_key(server)
    await asyncio.gather(lapses(first), turned_off(second))


# timers and caps


async def test_heartbeats_idle_close_and_the_auth_deadline(tight: Server) -> None:
    idle_key, busy_key = await new_account(tight, "full", "full")

    async def idle() -> tuple[list[Message], int | None]:
        async with connect(tight, idle_key) as conn:
            code = await conn.close_code()
            return conn.messages, code

    async def unauthenticated() -> int | None:
        return await refused_with(tight, None)

    async with connect(tight, busy_key) as busy:
        await busy.subscribe("ticks:BTC/USDT")
        (idle_messages, idle_code), auth_code = await asyncio.gather(idle(), unauthenticated())
        # Still open after the idle one was closed: it has a subscription.
        await busy.ping()
    assert idle_code == 4009
    assert auth_code == 4001
    beats = [m for m in idle_messages if m["type"] == "heartbeat"]
    assert beats and all(abs(m["ts"] - time.time_ns() // 1000) < 60_000_000 for m in beats)
    assert [m for m in busy.messages if m["type"] == "heartbeat"]


async def test_sessions_per_key_are_capped(tight: Server) -> None:
    key, sibling = await new_account(tight, "full", "full")
    async with connect(tight, key) as one, connect(tight, key) as two:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(tight, key):
                pass
        response = refused.value.response
        assert response.status_code == 429
        assert orjson.loads(response.body or b"{}")["code"] == "RATE_LIMITED"
        token = await ws_token(tight, key)
        async with connect(tight) as third:
            await third.send(op="auth", token=token)
            assert await third.close_code() == 4029
        async with connect(tight, sibling) as other:  # the cap is per key
            await other.ping()
        await one.ping()
        await two.ping()
    for _ in range(50):  # the server learns of the closes asynchronously
        try:
            async with connect(tight, key) as again:
                await again.ping()
                break
        except websockets.InvalidStatus:
            await asyncio.sleep(0.05)
    else:
        pytest.fail("a key under its cap again was still refused")


# slow consumers, shutdown, batching, metrics


async def scrape(port: int, path: str = "/metrics") -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        return await http.get(f"http://127.0.0.1:{port}{path}")


async def metrics(port: int) -> dict[str, float]:
    text = (await scrape(port)).text
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


async def test_a_slow_consumer_is_closed_with_4008_and_never_slows_the_others(tmp_path: Path) -> None:
    # Hundreds of symbols ticking every 5 ms fill the kernel's socket buffers of a client that does not read
    # within a second; one symbol is little enough for a client that does.
    symbols = [f"S{n:03d}/USDT" for n in range(300)]
    port = free_port()
    env = {
        **ENV,
        "RT_PAPER_TICK_MS": "5",
        "RT_WS_QUEUE": "50",
        "RT_METRICS_PORT": str(port),
        "RT_PAPER_SYMBOLS": ",".join(f"{s}=100" for s in symbols),
    }
    with run_server(tmp_path / "data", env) as slow_server:
        key = await full_key(slow_server)
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", slow_server.port))
        async with connect(slow_server, key) as fast, connect(slow_server, key, sock=raw, max_queue=1) as slow:
            await fast.subscribe("ticks:S000/USDT")
            for symbol in symbols:
                await slow.send(op="subscribe", channel=f"ticks:{symbol}")

            async def closed() -> bool:
                await fast.recv()
                return (await metrics(port))["rt_ws_slow_consumer_closes_total"] >= 1

            await eventually(closed, within=20)
            start = len(fast.seqs("ticks:S000/USDT"))
            while len(fast.seqs("ticks:S000/USDT")) < start + 20:
                await fast.recv()
            assert await slow.close_code() == 4008
        seqs = fast.seqs("ticks:S000/USDT")
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        assert (await metrics(port))["rt_ws_slow_consumer_closes_total"] == 1


async def test_shutdown_sends_server_shutdown_then_1001(tmp_path: Path) -> None:
    with run_server(tmp_path / "data", ENV) as doomed:
        key = await full_key(doomed)
        async with connect(doomed, key) as conn:
            await conn.subscribe("orders")
            doomed.process.send_signal(signal.SIGTERM)
            code = await conn.close_code()
        last = conn.messages[-1]
        assert (last["type"], last["event"]) == ("event", "server.shutdown")
        assert code == 1001
        doomed.process.wait(15)
        assert "Application shutdown complete" in doomed.logs()
        assert '"level":"error"' not in doomed.logs()


async def test_batch_0_sends_one_message_per_frame(server: Server) -> None:
    key = await full_key(server)
    async with (
        rest(server, key) as http,
        connect(server, key) as batched,
        connect(server, key, query="batch=0") as single,
    ):
        for conn in (batched, single):
            for channel in ("orders", "positions", "account", "events"):
                await conn.send(op="subscribe", channel=channel)
        for _ in range(5):
            await place(http)
        last = await last_seqs(server, key, "orders", "events")
        await single.until_seqs(last)
        await batched.until_seqs(last)
    assert all(isinstance(frame, dict) for frame in single.frames)
    assert len(single.frames) == len(single.messages)
    # A client that keeps up gets each message as it is made, batched or not; arrays are for catching up
    # (tests/session/test_session_wire.py).
    assert [m for m in batched.messages if m["type"] == "event"] == [m for m in single.messages if m["type"] == "event"]


async def test_metrics_in_prometheus_text(server: Server, metrics_port: int) -> None:
    key = await full_key(server)
    async with connect(server, key) as conn:
        await conn.subscribe("orders")
        result_data(await conn.call("order.place", **RESTING))
        text = (await scrape(metrics_port)).text
        during = await metrics(metrics_port)
    assert "# TYPE rt_ws_connections gauge" in text
    assert "# TYPE rt_ws_command_latency_ms histogram" in text
    assert during["rt_ws_connections"] >= 1
    assert during["rt_ws_subscriptions"] >= 1
    assert during["rt_ws_connections_accepted_total"] >= during["rt_ws_connections"]
    assert during["rt_ws_command_latency_ms_count"] >= 1
    assert during['rt_ws_command_latency_ms_bucket{le="+Inf"}'] == during["rt_ws_command_latency_ms_count"]
    assert {"rt_events_fanned_out_total", "rt_ws_queue_depth", "rt_ws_slow_consumer_closes_total"} <= set(during)
    assert (await scrape(metrics_port, "/other")).status_code == 404


# scale-out over Redis


@contextlib.asynccontextmanager
async def two_instances(root: Path, redis_url: str, prefix: str) -> AsyncIterator[tuple[Server, Server]]:
    """Two instances as operators run them: one PostgreSQL database (a fresh one, dropped after), one Redis prefix,
    one pepper and one secret key, a data dir each; A bootstraps the first key."""
    async with database(await need_postgres()) as url:
        env = {
            **ENV,
            "RT_DATABASE_URL": url,
            "RT_REDIS_URL": redis_url,
            "RT_REDIS_PREFIX": prefix,
            "RT_KEY_PEPPER": secrets.token_hex(32),
            "RT_SECRET_KEY": secrets.token_hex(32),
        }
        with run_server(root / "a", env) as a, run_server(root / "b", {**env, "RT_BOOTSTRAP": "0"}) as b:
            yield a, b


async def shared_key(server: Server) -> Key:
    """A full key made through the API with the bootstrap key: stored in the shared database, known to every
    instance at once."""
    assert server.key is not None
    async with rest(server, server.key) as http:
        made = ok(await http.post("/v1/keys", json={"scopes": "full", "tier": "pro_plus"}), 201)
    return Key(made["id"], made["key"], made["account_id"])


async def forget(redis_url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def drop_bus_subscriptions(redis_url: str, prefix: str) -> int:
    """Cut every instance's Pub/Sub connection (as a network blip or a Redis failover would)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        listed = await client.client_list()
        ids = [c["id"] for c in listed if c.get("name") == f"{prefix}:bus"]
        for client_id in ids:
            await client.client_kill_filter(_id=client_id)
        return len(ids)
    finally:
        await client.aclose()


async def test_two_instances_share_events_seq_tokens_and_history(tmp_path: Path, redis_prefix: str) -> None:
    redis_url = await need_redis()
    try:
        async with two_instances(tmp_path, redis_url, redis_prefix) as (a, b):
            key = await shared_key(a)
            async with rest(a, key) as via_a:
                # A client on B sees what A does, with one seq for both.
                async with connect(a, key) as on_a, connect(b, key) as on_b:
                    for conn in (on_a, on_b):
                        subscribed, _ = await conn.subscribe("orders")
                        assert subscribed["seq"] == 0
                    placed = [await place(via_a) for _ in range(3)]
                    last = await last_seqs(b, key, "orders")
                    assert last == await last_seqs(a, key, "orders")
                    await on_a.until_seqs(last)
                    await on_b.until_seqs(last)
                    seen_on_a = [(m["seq"], m["event"], m["data"]["id"]) for m in events(on_a.messages, "orders")]
                    seen_on_b = [(m["seq"], m["event"], m["data"]["id"]) for m in events(on_b.messages, "orders")]
                assert seen_on_b == seen_on_a
                assert [seq for seq, _, _ in seen_on_b] == list(range(1, last["orders"] + 1))
                assert {order["id"] for order in placed} == {i for _, e, i in seen_on_b if e == "order.created"}

                # A token issued by A works once, on B, and is then used up on A too.
                token = await ws_token(a, key)
                async with connect(b, token=token) as conn:
                    await conn.ping()
                    assert await refused_with(a, token) == 4001
                assert await refused_with(b, token) == 4001

                # Resume across instances: leave A at some seq, trade through A, come back on B.
                async with connect(a, key) as leaving:
                    await leaving.subscribe("orders")
                    await place(via_a)
                    await leaving.until_seqs(await last_seqs(a, key, "orders"))
                    since = leaving.seqs("orders")[-1]
                    leaving.kill()
                missed = [await place(via_a) for _ in range(2)]
                async with connect(b, key) as back:
                    await back.send(op="subscribe", channel="orders", since=since)
                    last = await last_seqs(b, key, "orders")
                    await back.until_seqs(last)
                    await back.ping()
                replayed = events(back.messages, "orders")
                assert [m["seq"] for m in replayed] == list(range(since + 1, last["orders"] + 1))
                assert [m["data"]["id"] for m in replayed if m["event"] == "order.created"] == [o["id"] for o in missed]
                assert not [m for m in back.messages if m["type"] == "snapshot"]

                # A lost Pub/Sub connection is re-made, and what was published meanwhile still arrives, in order.
                async with connect(b, key) as steady:
                    start, _ = await steady.subscribe("orders")
                    assert await drop_bus_subscriptions(redis_url, redis_prefix) >= 2
                    during = [await place(via_a) for _ in range(2)]
                    last = await last_seqs(a, key, "orders")
                    await steady.until_seqs(last)
                assert steady.seqs("orders") == list(range(start["seq"] + 1, last["orders"] + 1))
                created = [m["data"]["id"] for m in events(steady.messages, "orders") if m["event"] == "order.created"]
                assert created == [o["id"] for o in during]
    finally:
        await forget(redis_url, redis_prefix)


async def test_resume_across_a_server_restart_neither_misses_nor_repeats(tmp_path: Path) -> None:
    """The sequences outlive the process: a client that saw seq N before a restart resumes with since=N after it
    and gets exactly what happened in between, then live events."""
    data = tmp_path / "data"
    with run_server(data, {"RT_PAPER_TICK_MS": "0"}) as first:
        assert first.key is not None
        key = Key("bootstrap", first.key, "")
        async with rest(first, key) as http, connect(first, key) as conn:
            await conn.subscribe("orders")
            for _ in range(3):
                await place(http)
            await conn.until_seqs({"orders": 6})  # each market order: order.created, order.filled
            seen_before = conn.seqs("orders")
    assert seen_before == list(range(1, 7))

    with run_server(data, {"RT_PAPER_TICK_MS": "0"}) as second:
        async with rest(second, key) as http:
            missed = [(await place(http))["id"] for _ in range(2)]
            async with connect(second, key) as conn:
                subscribed, first_replayed = await conn.subscribe("orders", since=6)
                assert subscribed["seq"] == 10
                assert first_replayed["type"] == "event" and first_replayed["seq"] == 7
                await conn.until_seqs({"orders": 10})
                live = (await place(http))["id"]
                await conn.until_seqs({"orders": 12})
                await conn.ping()
                assert conn.seqs("orders") == list(range(7, 13))
                assert not [m for m in conn.messages if m["type"] == "snapshot"]
                created = [m["data"]["id"] for m in events(conn.messages, "orders") if m["event"] == "order.created"]
                assert created == [*missed, live]
