"""rt/webhooks/sender: one POST to a real receiver on 127.0.0.1 and the Answer it makes of every outcome; send never
raises, never follows a redirect, and connects only to an address checked just before."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from rt.records.webhooks import RESPONSE_SNIPPET
from rt.webhooks import ssrf
from rt.webhooks.sender import Sender, retry_after_s

LOCAL = ("127.0.0.1",)
BODY = b'{"id":"evt_1","event":"webhook.test","timestamp":"2026-12-01T21:00:00.000Z","data":{}}'
HEADERS = {"Content-Type": "application/json", "webhook-id": "evt_1"}


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A small HTTP/1.1 server: /ok, /fail (a long body), /busy (429), /moved (302 to /target), /slow (never answers),
    /hangup (closes without an answer), /endless (a body that never ends), /keep (keeps the connection open)."""

    port: int = 0
    connections: int = 0
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # set at teardown: /slow gives up
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a request was read
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            path = await self.read_request(reader)
            while path == "/keep":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept")
                await writer.drain()
                path = await self.read_request(reader)
            if path == "/slow":
                await self.release.wait()
                return
            if path == "/hangup":
                return
            if path == "/endless":
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                while not self.release.is_set():
                    writer.write(b"x" * 65536)
                    await writer.drain()
                return
            status, extra, content = {
                "/ok": ("200 OK", "", b"thanks"),
                "/fail": ("500 Internal Server Error", "", "é".encode() * (RESPONSE_SNIPPET * 10)),
                "/busy": ("429 Too Many Requests", "Retry-After: 7\r\n", b"slow down"),
                "/moved": ("302 Found", "Location: /target\r\n", b""),
                "/target": ("200 OK", "", b"followed"),
            }[path]
            writer.write(
                f"HTTP/1.1 {status}\r\n{extra}Content-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode()
                + content
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.handlers.discard(task)

    async def read_request(self, reader: asyncio.StreamReader) -> str:
        head = await reader.readuntil(b"\r\n\r\n")
        line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines if h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        path = line.split(" ")[1]
        self.seen.append(Seen(path, headers, body))
        self.arrived.set()
        return path


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    server = await asyncio.start_server(made.handle, "127.0.0.1", 0)
    made.port = server.sockets[0].getsockname()[1]
    try:
        yield made
    finally:
        made.release.set()
        server.close()
        await asyncio.gather(*made.handlers)
        await server.wait_closed()


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    made = Sender(LOCAL, timeout_s=5.0)
    try:
        yield made
    finally:
        await made.aclose()


def resolving_to(*addresses: str) -> ssrf.Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def test_a_2xx_answer_is_ok_with_its_latency_and_body(sender: Sender, receiver: Receiver) -> None:
    answer = await sender.send(receiver.url("/ok"), BODY, HEADERS)
    assert answer.ok
    assert answer.status_code == 200
    assert answer.error is None
    assert answer.response == "thanks"
    assert answer.latency_ms > 0
    [seen] = receiver.seen
    assert seen.body == BODY
    assert seen.headers["webhook-id"] == "evt_1"
    assert seen.headers["content-type"] == "application/json"


async def test_a_500_is_not_ok_and_keeps_only_a_snippet_of_the_body(sender: Sender, receiver: Receiver) -> None:
    answer = await sender.send(receiver.url("/fail"), BODY, HEADERS)
    assert not answer.ok
    assert answer.status_code == 500
    assert answer.error is not None and "500" in answer.error
    assert answer.response == "é" * RESPONSE_SNIPPET


async def test_a_429_carries_its_retry_after(sender: Sender, receiver: Receiver) -> None:
    answer = await sender.send(receiver.url("/busy"), BODY, HEADERS)
    assert answer.status_code == 429
    assert answer.retry_after_s == 7.0
    assert answer.response == "slow down"


def test_retry_after_reads_delta_seconds_and_http_dates() -> None:
    now = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=90), usegmt=True)
    earlier = format_datetime(now - timedelta(seconds=90), usegmt=True)
    assert retry_after_s("120", now=now.timestamp()) == 120.0
    assert retry_after_s(later, now=now.timestamp()) == 90.0
    assert retry_after_s(earlier, now=now.timestamp()) == 0.0
    assert retry_after_s(None) is None
    assert retry_after_s("soon") is None
    assert retry_after_s("-5") is None


async def test_a_redirect_is_an_answer_and_is_never_followed(sender: Sender, receiver: Receiver) -> None:
    answer = await sender.send(receiver.url("/moved"), BODY, HEADERS)
    assert answer.status_code == 302
    assert not answer.ok
    assert answer.error is not None and "redirect" in answer.error
    assert receiver.paths() == ["/moved"]


async def test_a_receiver_slower_than_the_timeout_is_no_answer(receiver: Receiver) -> None:
    quick = Sender(LOCAL, timeout_s=0.3)
    try:
        async with asyncio.timeout(5):  # the sender's own bound, not this one, ends the attempt
            answer = await quick.send(receiver.url("/slow"), BODY, HEADERS)
    finally:
        await quick.aclose()
    assert answer.status_code is None
    assert answer.error is not None and "timeout" in answer.error
    assert receiver.paths() == ["/slow"]


async def test_a_refused_connection_is_an_error_not_an_exception(sender: Sender) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    answer = await sender.send(f"http://127.0.0.1:{port}/ok", BODY, HEADERS)
    assert answer.status_code is None
    assert answer.error is not None and "connect" in answer.error


async def test_a_receiver_that_hangs_up_is_an_error_not_an_exception(sender: Sender, receiver: Receiver) -> None:
    answer = await sender.send(receiver.url("/hangup"), BODY, HEADERS)
    assert answer.status_code is None
    assert answer.error


async def test_a_name_that_now_resolves_to_a_private_address_is_never_connected(receiver: Receiver) -> None:
    # 127.0.0.1 is allowed by that name only: another name resolving to it is still refused.
    rebound = Sender(LOCAL, timeout_s=5.0, resolve=resolving_to("127.0.0.1"))
    try:
        answer = await rebound.send(receiver.url("/ok", host="hooks.example.com"), BODY, HEADERS)
    finally:
        await rebound.aclose()
    assert answer.status_code is None
    assert answer.error is not None and "loopback" in answer.error
    assert receiver.connections == 0


async def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Let the test's loopback receiver count as a public address, so the pinned path can be watched end to end.
    monkeypatch.setattr(ssrf, "refusal", lambda address: None)
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["127.0.0.1"]

    pinned = Sender((), timeout_s=5.0, resolve=resolve)
    try:
        for _ in range(2):
            answer = await pinned.send(receiver.url("/ok", host="hooks.example.com"), BODY, HEADERS)
            assert answer.ok
    finally:
        await pinned.aclose()
    assert asked == ["hooks.example.com", "hooks.example.com"]  # checked again before every attempt
    assert [s.headers["host"] for s in receiver.seen] == [f"hooks.example.com:{receiver.port}"] * 2


async def test_proxies_from_the_environment_are_not_used(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{dead}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    direct = Sender(LOCAL, timeout_s=5.0)
    try:
        answer = await direct.send(receiver.url("/ok"), BODY, HEADERS)
    finally:
        await direct.aclose()
    assert answer.ok


async def test_cancelling_a_send_cancels_it(sender: Sender, receiver: Receiver) -> None:
    task = asyncio.create_task(sender.send(receiver.url("/slow"), BODY, HEADERS))
    async with asyncio.timeout(5):
        await receiver.arrived.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_body_is_asked_for_unencoded(sender: Sender, receiver: Receiver) -> None:
    answer = await sender.send(receiver.url("/ok"), BODY, HEADERS)
    assert answer.ok
    [seen] = receiver.seen
    assert seen.headers["accept-encoding"] == "identity"


async def test_a_body_that_never_ends_is_read_only_as_far_as_the_snippet(sender: Sender, receiver: Receiver) -> None:
    # Reading it all would run into the timeout and lose the status; the sender stops once the snippet is full.
    answer = await sender.send(receiver.url("/endless"), BODY, HEADERS)
    assert answer.ok
    assert answer.response == "x" * RESPONSE_SNIPPET


async def test_connections_are_reused_per_host_name_not_per_address(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ssrf, "refusal", lambda address: None)
    pooled = Sender((), timeout_s=5.0, resolve=resolving_to("127.0.0.1"))
    try:
        for host in ("hooks.example.com", "hooks.example.com", "other.example.com", "hooks.example.com"):
            answer = await pooled.send(receiver.url("/keep", host=host), BODY, HEADERS)
            assert answer.ok
            assert answer.response == "kept"
    finally:
        await pooled.aclose()
    assert receiver.connections == 2  # one per name, though both names reach the same address
    assert [s.headers["host"].split(":")[0] for s in receiver.seen] == [
        "hooks.example.com",
        "hooks.example.com",
        "other.example.com",
        "hooks.example.com",
    ]


async def test_an_ipv6_literal_is_reached_with_a_bracketed_host_header() -> None:
    made = Receiver()
    try:
        server = await asyncio.start_server(made.handle, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    made.port = server.sockets[0].getsockname()[1]
    ipv6 = Sender(("::1",), timeout_s=5.0)
    try:
        answer = await ipv6.send(made.url("/ok", host="[::1]"), BODY, HEADERS)
    finally:
        await ipv6.aclose()
        server.close()
        await asyncio.gather(*made.handlers)
        await server.wait_closed()
    assert answer.ok
    [seen] = made.seen
    assert seen.headers["host"] == f"[::1]:{made.port}"
