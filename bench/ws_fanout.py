"""WebSocket fan-out: rt's delivered ticks/s, publish->receive latency and memory per connection, next to a bare
`websockets` broadcast server under the same load, plus the order.place -> result round trip over the socket.

    .venv/bin/python bench/ws_fanout.py [--clients 200,1000] [--rate 100] [--seconds 10] [--idle 5000]
        [--orders 2000] [--procs 2] [--client websockets|raw|both] [--compression none|deflate|both]
        [--skip-bare] [--profile DIR]

Each fan-out run starts a fresh `rt serve` (one paper symbol, RT_PAPER_TICK_MS = 1000 / rate), takes one token per
client from POST /v1/ws/token, connects the clients from `--procs` separate processes (each its own event loop),
subscribes them to ticks:BTC/USDT and counts, over `--seconds`, the events received and their latency (receive
time - the event's `ts`, both epoch µs on this machine). The same clients then run against bench/bare_broadcast.py.
`--client websockets` is the `websockets` asyncio client; `raw` is a minimal frame parser (RawClient below) that
leaves more of the shared CPU to the server. Memory is the server's VmRSS before and after the clients connect; CPU
is user+system time over the window of the server, of the load generator and of everything else on the machine.

Both servers make a tick, then sleep 1 / rate: a server whose event loop cannot keep up offers fewer ticks/s
instead of queueing them, so at saturation `events/s` is its capacity and `ticks/s` shows how far it fell behind.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.server import Server, free_port, run_server

CHANNEL = "ticks:BTC/USDT"
BARE = Path(__file__).resolve().parent / "bare_broadcast.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


def now_us() -> int:
    return time.time_ns() // 1000


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def machine_cpu() -> tuple[float, float]:
    """CPU seconds all cores spent busy since boot, and of those in softirq (loopback TCP is mostly there)."""
    jiffies = [int(x) for x in Path("/proc/stat").read_text().split()[1:9]]
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / CLK_TCK, jiffies[6] / CLK_TCK  # idle, iowait; softirq


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


# the load generator: runs in child processes


class Window:
    """Events received while start <= now < end are counted; the parent sets it once every client is connected."""

    def __init__(self) -> None:
        self.start = 1 << 62
        self.end = 1 << 62


@dataclass
class Tally:
    """What one client process saw inside the window, over all its connections."""

    window: Window
    events: int = 0
    frames: int = 0
    gaps: int = 0
    seq_first: int = 1 << 62
    seq_last: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    latencies: array[int] = field(default_factory=lambda: array("q"))


class Stream:
    """One connection's count: every text frame goes through text(); fold() adds it to the process's tally."""

    __slots__ = ("count", "first", "last", "tally")

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.first = self.last = self.count = 0

    def text(self, raw: bytes, now: int) -> None:
        window = self.tally.window
        if not window.start <= now < window.end:
            return
        self.tally.frames += 1
        message = orjson.loads(raw)
        for m in message if isinstance(message, list) else (message,):
            if m.get("type") == "event":
                self.tally.latencies.append(now - m["ts"])
                self.last = m["seq"]
                self.first = self.first or self.last
                self.count += 1

    def closed(self, code: int | str) -> None:
        self.tally.closes[str(code)] += 1

    def fold(self) -> None:
        if self.count:
            tally = self.tally
            tally.events += self.count
            tally.gaps += self.last - self.first + 1 - self.count
            tally.seq_first = min(tally.seq_first, self.first)
            tally.seq_last = max(tally.seq_last, self.last)
            self.count = 0


def _subscribed(raw: bytes) -> bool:
    message = orjson.loads(raw)
    for m in message if isinstance(message, list) else (message,):
        if m.get("type") == "error":
            raise RuntimeError(f"subscribe refused: {m}")
        if m.get("type") == "snapshot":
            return True
    return False


SUBSCRIBE = b'{"op":"subscribe","channel":"' + CHANNEL.encode() + b'","id":1}'


class WebsocketsClient:
    """The `websockets` asyncio client, as an application would use it."""

    def __init__(self, stream: Stream, compression: str | None) -> None:
        self.stream = stream
        self.compression = compression
        self.extensions: list[str] = []
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self, url: str, subscribe: bool) -> None:
        ws = self._ws = await connect(
            url, compression=self.compression, proxy=None, ping_interval=None, max_size=2**22, open_timeout=60
        )
        self.extensions = [type(x).__name__ for x in ws.protocol.extensions]
        if subscribe:
            await ws.send(SUBSCRIBE, text=True)
            while not _subscribed(await ws.recv(decode=False)):
                pass
        self._reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: ClientConnection) -> None:
        text = self.stream.text
        try:
            while True:
                raw = await ws.recv(decode=False)
                text(raw, time.time_ns() // 1000)
        except ConnectionClosed as exc:
            self.stream.closed(exc.rcvd.code if exc.rcvd else "no close frame")

    def abort(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            self._ws.transport.abort()


class RawClient(asyncio.Protocol):
    """A minimal RFC 6455 client for the load generator: no extensions, answers pings, parses frames in place.

    It costs a few µs per frame where the `websockets` client costs tens, so on a shared 2-core box it leaves the
    CPU to the server under test.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.extensions: list[str] = []
        self._buf = bytearray()
        self._upgraded = False
        self._subscribed: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        self._opened: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None

    async def open(self, url: str, subscribe: bool) -> None:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        target = parts.path + ("?" + parts.query if parts.query else "")
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        assert self.transport is not None
        self.transport.write(request.encode())
        await asyncio.wait_for(self._opened, 60)
        if subscribe:
            self._subscribed = loop.create_future()
            self._send(0x1, SUBSCRIBE)
            await asyncio.wait_for(self._subscribed, 60)
            self._subscribed = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self._opened, self._subscribed):
            if future is not None and not future.done():
                future.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        now = time.time_ns() // 1000
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            if b" 101 " not in status + b" ":
                self._opened.set_exception(ConnectionError(f"handshake refused: {bytes(buf[:end])[:300]!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            del buf[: end + 4]
            self._upgraded = True
            self._opened.set_result(None)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            opcode, length, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            if opcode == 0x1:
                self._text(payload, now)
            elif opcode == 0x9:
                self._send(0xA, payload)
            elif opcode == 0x8:
                self.stream.closed(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005)
                self._send(0x8, payload[:2])
                assert self.transport is not None
                self.transport.close()
        del buf[:pos]

    def _text(self, payload: bytes, now: int) -> None:
        if self._subscribed is not None:
            try:
                if _subscribed(payload):
                    self._subscribed.set_result(None)
            except RuntimeError as exc:
                self._subscribed.set_exception(exc)
            return
        self.stream.text(payload, now)

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        n = len(payload)
        header = bytes([0x80 | opcode, 0x80 | n]) if n < 126 else bytes([0x80 | opcode, 0xFE]) + n.to_bytes(2, "big")
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(header + mask + masked)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def _clients(pipe: Connection, urls: list[str], kind: str, compression: str | None, subscribe: bool) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(50)
    window = Window()
    tally = Tally(window)
    streams: list[Stream] = []

    async def open_one(url: str) -> WebsocketsClient | RawClient:
        stream = Stream(tally)
        client = RawClient(stream) if kind == "raw" else WebsocketsClient(stream, compression)
        async with gate:
            try:
                await client.open(url, subscribe)
            except BaseException:
                client.abort()
                raise
        streams.append(stream)
        return client

    opened = await asyncio.gather(*(open_one(u) for u in urls), return_exceptions=True)
    clients = [c for c in opened if isinstance(c, WebsocketsClient | RawClient)]
    errors = Counter(f"{type(e).__name__}: {e}"[:160] for e in opened if isinstance(e, BaseException))
    extensions = sorted({x for c in clients for x in c.extensions})
    pipe.send({"connected": len(clients), "errors": dict(errors), "extensions": extensions})
    window.start, window.end = await loop.run_in_executor(None, pipe.recv)
    await asyncio.sleep(max(0.0, (window.start - now_us()) / 1e6))
    cpu0 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    await asyncio.sleep(max(0.0, (window.end - now_us()) / 1e6))
    cpu1 = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
    for stream in streams:
        stream.fold()
    pipe.send(
        {
            "events": tally.events,
            "frames": tally.frames,
            "gaps": tally.gaps,
            "seq_first": tally.seq_first,
            "seq_last": tally.seq_last,
            "closes": dict(tally.closes),
            "cpu_s": cpu1 - cpu0,
            "latencies": tally.latencies.tobytes(),
        }
    )
    await loop.run_in_executor(None, pipe.recv)  # hold the connections until the parent has read the server
    for client in clients:
        client.abort()


def client_process(pipe: Connection, urls: list[str], kind: str, compression: str | None, subscribe: bool) -> None:
    raise_nofile()
    run_loop(_clients(pipe, urls, kind, compression, subscribe))


# the parent: servers, tokens, phases, the table


@dataclass(frozen=True)
class Load:
    clients: int
    rate: float
    seconds: float
    procs: int
    kind: str  # "websockets" or "raw": the client library
    compression: str | None
    idle: bool = False


@dataclass
class Fanout:
    server: str
    load: Load
    connected: int = 0
    seconds: float = 0.0
    events: int = 0
    frames: int = 0
    gaps: int = 0
    ticks: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    extensions: list[str] = field(default_factory=list)
    latencies_us: list[int] = field(default_factory=list)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0
    softirq_s: float = 0.0
    server_log: list[str] = field(default_factory=list)
    rss_before_kb: int = 0
    rss_after_kb: int = 0

    @property
    def per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.seconds if self.seconds else 0.0

    def pct_ms(self, q: float) -> float:
        if not self.latencies_us:
            return float("nan")
        return self.latencies_us[min(len(self.latencies_us) - 1, int(q * len(self.latencies_us)))] / 1000

    @property
    def other_cpu_s(self) -> float:
        return max(0.0, self.machine_cpu_s - self.server_cpu_s - self.client_cpu_s - self.softirq_s)

    @property
    def cpu_per_event_us(self) -> float:
        return 1e6 * self.server_cpu_s / self.events if self.events else float("nan")

    @property
    def rss_per_conn_kb(self) -> float:
        return (self.rss_after_kb - self.rss_before_kb) / self.connected if self.connected else float("nan")


def run_clients(urls: list[str], load: Load, server_pid: int, result: Fanout, profile: Path | None = None) -> None:
    """Connect every URL from `load.procs` processes, measure a window of `load.seconds`, fill `result`.

    With `profile`, py-spy samples the server over the window into that file (collapsed stacks).
    """
    ctx = mp.get_context("spawn")
    chunks = [urls[i :: load.procs] for i in range(load.procs) if urls[i :: load.procs]]
    pipes: list[Connection] = []
    children = []
    for chunk in chunks:
        parent_end, child_end = ctx.Pipe()
        args = (child_end, chunk, load.kind, load.compression, not load.idle)
        child = ctx.Process(target=client_process, args=args, daemon=True)
        child.start()
        pipes.append(parent_end)
        children.append(child)
    try:
        for pipe in pipes:
            ready = _recv(pipe, 600)
            result.connected += ready["connected"]
            result.errors.update(ready["errors"])
            result.extensions = sorted(set(result.extensions) | set(ready["extensions"]))
        time.sleep(3.0 if load.idle else 1.0)
        result.rss_after_kb = rss_kb(server_pid)
        start = now_us() + 1_000_000
        end = start + int(load.seconds * 1e6)
        for pipe in pipes:
            pipe.send((start, end))
        time.sleep(max(0.0, (start - now_us()) / 1e6))
        cpu0, (busy0, softirq0) = cpu_s(server_pid), machine_cpu()
        spy = _py_spy(server_pid, load.seconds, profile) if profile else None
        time.sleep(max(0.0, (end - now_us()) / 1e6))
        result.server_cpu_s = cpu_s(server_pid) - cpu0
        busy1, softirq1 = machine_cpu()
        result.machine_cpu_s, result.softirq_s = busy1 - busy0, softirq1 - softirq0
        if spy is not None:
            spy.wait(60)
        result.seconds = load.seconds
        first, last = 1 << 62, 0
        latencies = array("q")
        for pipe in pipes:
            done = _recv(pipe, 120)
            result.events += done["events"]
            result.frames += done["frames"]
            result.gaps += done["gaps"]
            result.client_cpu_s += done["cpu_s"]
            for code, n in done["closes"].items():
                result.closes[code] = result.closes.get(code, 0) + n
            first, last = min(first, done["seq_first"]), max(last, done["seq_last"])
            latencies.frombytes(done["latencies"])
        result.ticks = last - first + 1 if last else 0
        result.latencies_us = sorted(latencies)
        for pipe in pipes:
            pipe.send("bye")
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()


def _py_spy(pid: int, seconds: float | None, path: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` for `seconds`, or until it gets SIGINT."""
    py_spy = Path(sys.executable).with_name("py-spy")
    argv = [str(py_spy), "record", "--pid", str(pid), "--rate", "200"]
    argv += ["--duration", str(max(1, int(seconds)))] if seconds else []
    argv += ["--format", "raw", "--function", "--output", str(path)]
    argv += os.environ.get("PY_SPY_ARGS", "--nonblocking").split()  # --native needs the server paused per sample
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_summary(path: Path, top: int = 25) -> list[str]:
    """py-spy's collapsed stacks -> the functions with the most samples on the stack (total) and on top (self)."""
    total: Counter[str] = Counter()
    own: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [f.split(" (")[0] + " (" + f.rsplit("/", 1)[-1] for f in stack.split(";")]
        samples += n
        for frame in set(frames):
            total[frame] += n
        own[frames[-1]] += n
    out = [f"{samples} samples; total = on the stack, self = on top"]
    for name, n in total.most_common(top):
        out.append(f"  total {100 * n / samples:5.1f}%  self {100 * own[name] / samples:5.1f}%  {name}")
    out.append("  top self:")
    for name, n in own.most_common(top):
        out.append(f"  self {100 * n / samples:5.1f}%  {name}")
    return out


def _recv(pipe: Connection, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise RuntimeError(f"a client process did not answer within {timeout:.0f} s")
    return pipe.recv()


async def _tokens(base: str, key: str, n: int) -> list[str]:
    gate = asyncio.Semaphore(32)
    limits = httpx.Limits(max_connections=32)
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, limits=limits, timeout=30) as http:

        async def one() -> str:
            async with gate:
                response = await http.post("/v1/ws/token")
                response.raise_for_status()
                return str(response.json()["token"])

        return list(await asyncio.gather(*(one() for _ in range(n))))


def rt_env(rate: float) -> dict[str, str]:
    return {
        "RT_LOG_LEVEL": "warning",
        "RT_PAPER_SYMBOLS": "BTC/USDT=65000",
        "RT_PAPER_TICK_MS": str(max(1, round(1000 / rate))),
        "RT_PAPER_SEED": "1",
        "RT_TIER_LIMITS": "pro_plus=10000000/1000000",
        "RT_WS_MAX_PER_KEY": "1000000",
        "RT_WS_QUEUE": "100000",
        "RT_WS_IDLE_S": "3600",
    }


@contextlib.contextmanager
def rt_server(rate: float, log: list[str] | None = None) -> Iterator[Server]:
    """`rt serve` on a fresh data dir; `log` gets the server's stderr once it has stopped."""
    with tempfile.TemporaryDirectory() as tmp:
        with run_server(Path(tmp) / "data", rt_env(rate)) as server:
            assert server.key, "no bootstrap key"
            yield server
        if log is not None:
            log.extend(server.logs().splitlines())


@contextlib.contextmanager
def bare_server(rate: float, compression: str | None) -> Iterator[tuple[str, int]]:
    """(ws URL, server pid)"""
    port = free_port()
    argv = [sys.executable, str(BARE), "--port", str(port), "--rate", str(rate), "--compression", compression or "none"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"bare server did not start: {line!r}")
        yield f"ws://127.0.0.1:{port}/", process.pid
    finally:
        process.terminate()
        process.wait(10)


def rt_fanout(load: Load, profile: Path | None = None) -> Fanout:
    result = Fanout("rt", load)
    with rt_server(load.rate, result.server_log) as server:
        base, key, pid = server.url, server.key or "", server.process.pid
        tokens = run_loop(_tokens(base, key, load.clients + 1))
        ws_base = base.replace("http://", "ws://") + "/v1/ws?token="
        run_loop(_warm_up(ws_base + tokens.pop()))
        result.rss_before_kb = rss_kb(pid)
        run_clients([ws_base + token for token in tokens], load, pid, result, profile)
    return result


def bare_fanout(load: Load, profile: Path | None = None) -> Fanout:
    result = Fanout("bare websockets", load)
    with bare_server(load.rate, load.compression) as (url, pid):
        run_loop(_warm_up(url))
        result.rss_before_kb = rss_kb(pid)
        run_clients([url] * load.clients, load, pid, result, profile)
    return result


async def _warm_up(url: str) -> None:
    """One subscribed connection first, so the server's code paths are loaded before the RSS baseline."""
    client = WebsocketsClient(Stream(Tally(Window())), None)
    await client.open(url, True)
    await asyncio.sleep(0.5)
    client.abort()
    await asyncio.sleep(0.5)


# order.place -> result over the socket


@dataclass
class Orders:
    n: int
    rtt_us: list[int]
    server_us: list[int]
    errors: Counter[str]

    def pct_ms(self, values: list[int], q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] / 1000 if values else float("nan")


async def _orders(base: str, key: str, n: int, warm: int) -> Orders:
    envelope = {
        "max_position_size": 1_000_000_000,
        "max_exposure": 1000,
        "max_daily_loss": 1_000_000_000,
        "max_concurrent_positions": 100_000,
    }
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=30) as http:
        (await http.put("/v1/risk/envelope", json=envelope)).raise_for_status()
        token = (await http.post("/v1/ws/token")).json()["token"]
    url = base.replace("http://", "ws://") + "/v1/ws?token=" + token
    out = Orders(n, [], [], Counter())
    async with connect(url, compression=None, proxy=None, ping_interval=None) as ws:
        for i in range(warm + n):
            side = "buy" if i % 2 == 0 else "sell"
            params = {"exchange": "paper", "symbol": "BTC/USDT", "side": side, "type": "market", "quantity": 0.0001}
            frame = orjson.dumps({"op": "order.place", "id": i, "params": params})
            sent = now_us()
            await ws.send(frame, text=True)
            reply = await _reply(ws, i)
            received = now_us()
            if i < warm:
                continue
            if reply["type"] != "result":
                out.errors[str(reply.get("error", {}).get("code"))] += 1
                continue
            out.rtt_us.append(received - sent)
            out.server_us.append(reply["time_out"] - reply["time_in"])
    out.rtt_us.sort()
    out.server_us.sort()
    return out


async def _reply(ws: ClientConnection, request_id: int) -> dict[str, Any]:
    while True:
        message = orjson.loads(await ws.recv(decode=False))
        for m in message if isinstance(message, list) else (message,):
            if m.get("id") == request_id and m.get("type") in ("result", "error"):
                return dict(m)


def rt_orders(rate: float, n: int, profile: Path | None = None) -> Orders:
    with rt_server(rate) as server:
        spy = _py_spy(server.process.pid, None, profile) if profile else None
        try:
            return run_loop(_orders(server.url, server.key or "", n, warm=100))
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)


# the report


def fanout_row(r: Fanout) -> str:
    closes = ",".join(f"{c}x{n}" for c, n in sorted(r.closes.items())) or "-"
    load = r.load
    return (
        f"{r.server:<15} {load.kind:<10} {load.compression or 'none':<7} {r.connected:>5}/{load.clients:<5} "
        f"{r.ticks_per_s:>7.1f} {r.per_s:>9.0f} {r.events / max(r.frames, 1):>6.2f} {r.gaps:>6} "
        f"{r.pct_ms(0.5):>7.2f} {r.pct_ms(0.99):>8.2f} {r.pct_ms(1.0):>8.1f} "
        f"{100 * r.server_cpu_s / r.seconds:>5.0f}% {100 * r.client_cpu_s / r.seconds:>5.0f}% "
        f"{100 * r.softirq_s / r.seconds:>5.0f}% {100 * r.other_cpu_s / r.seconds:>5.0f}% "
        f"{r.rss_per_conn_kb:>7.1f} {closes}"
    )


FANOUT_HEAD = (
    f"{'server':<15} {'client':<10} {'deflate':<7} {'connected':>11} {'ticks/s':>7} {'events/s':>9} {'ev/frm':>6} "
    f"{'missed':>6} {'p50 ms':>7} {'p99 ms':>8} {'max ms':>8} {'server':>6} {'loadgen':>6} {'sirq':>6} {'other':>6} "
    f"{'KB/conn':>7} closes"
)


def idle_row(r: Fanout) -> str:
    return (
        f"{r.server:<15} {r.load.kind:<10} {r.connected:>5}/{r.load.clients:<5} {r.rss_before_kb / 1024:>8.1f} MB "
        f"{r.rss_after_kb / 1024:>8.1f} MB {r.rss_per_conn_kb:>8.1f} KB/connection"
    )


def print_report(args: argparse.Namespace, fanouts: list[Fanout], idles: list[Fanout], orders: Orders | None) -> None:
    print()
    print(
        f"ws fan-out: {args.rate:g} ticks/s nominal on {CHANNEL}, {args.seconds:g} s window, {args.procs} client "
        f"processes, websockets {_websockets_version()}, {os.cpu_count()} CPUs shared by server and load generator"
    )
    print(
        "latency = client receive time - event ts; missed = seq gaps inside the window; CPU in % of one core for "
        "the server, the load generator, kernel softirq (loopback TCP, partly the server's) and everything else"
    )
    print(FANOUT_HEAD)
    for r in fanouts:
        print(fanout_row(r))
        if r.load.compression and not r.extensions:
            print("    permessage-deflate was offered but not negotiated")
        for error, n in r.errors.items():
            print(f"    connect errors: {n} x {error}")
        for line, n in summarize_log(r.server_log).most_common(5):
            print(f"    server log: {n} x {line}")
    for r in fanouts:
        for b in fanouts:
            if r.server == "rt" and b.server != "rt" and r.load == b.load and b.per_s:
                print(
                    f"  rt share, {r.load.clients} clients, {r.load.kind} client, deflate "
                    f"{r.load.compression or 'none'}: {r.per_s / b.per_s:.0%} of the bare server's events/s, "
                    f"p99 {r.pct_ms(0.99):.2f} ms vs {b.pct_ms(0.99):.2f} ms, ticks/s {r.ticks_per_s:.1f} vs "
                    f"{b.ticks_per_s:.1f}, server CPU per event {r.cpu_per_event_us:.1f} µs vs "
                    f"{b.cpu_per_event_us:.1f} µs"
                )
    if idles:
        print()
        print("idle connections (connected, no subscription): server VmRSS before, and 3 s after they connected")
        for r in idles:
            print(idle_row(r))
            for error, n in r.errors.items():
                print(f"    connect errors: {n} x {error}")
    if orders is not None:
        o = orders
        print()
        print(f"order.place -> result over one socket: {o.n} sequential market orders after 100 warm-up ones")
        print(
            f"  round trip                 p50 {o.pct_ms(o.rtt_us, 0.5):6.2f} ms  "
            f"p99 {o.pct_ms(o.rtt_us, 0.99):6.2f} ms  max {o.pct_ms(o.rtt_us, 1.0):7.2f} ms  "
            f"({len(o.rtt_us)} results, errors: {dict(o.errors) or 'none'})"
        )
        print(
            f"  server time_out - time_in  p50 {o.pct_ms(o.server_us, 0.5):6.2f} ms  "
            f"p99 {o.pct_ms(o.server_us, 0.99):6.2f} ms  max {o.pct_ms(o.server_us, 1.0):7.2f} ms"
        )


def summarize_log(lines: list[str]) -> Counter[str]:
    """The server's warnings and errors, each as its message and the last line of its traceback, counted."""
    out: Counter[str] = Counter()
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            out[line[:200]] += 1
            continue
        exc = str(record.get("exc", "")).strip().splitlines()
        out[f"{record.get('level')}: {str(record.get('msg', '')).strip()} {exc[-1] if exc else ''}"[:240]] += 1
    return out


def _websockets_version() -> str:
    from websockets.version import version

    return version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="200,1000", help="comma-separated client counts, one run each")
    parser.add_argument("--rate", type=float, default=100.0, help="ticks per second of the one symbol")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per run")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections for the RSS run (0: skip)")
    parser.add_argument("--orders", type=int, default=2000, help="sequential order.place round trips (0: skip)")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument(
        "--client",
        choices=("websockets", "raw", "both"),
        default="both",
        help="the websockets asyncio client, a minimal frame parser that costs the shared CPU far less, or both",
    )
    parser.add_argument(
        "--compression",
        choices=("none", "deflate", "both"),
        default="none",
        help="offer permessage-deflate (websockets client only)",
    )
    parser.add_argument("--skip-bare", action="store_true", help="do not measure the bare websockets server")
    parser.add_argument(
        "--profile",
        type=Path,
        help="directory: py-spy (pip install py-spy) samples each server over its window, summary printed",
    )
    args = parser.parse_args()
    raise_nofile()
    counts = [int(c) for c in args.clients.split(",") if c.strip()]
    kinds = ["websockets", "raw"] if args.client == "both" else [args.client]
    modes: list[str | None] = [None, "deflate"] if args.compression == "both" else [None]
    if args.compression == "deflate":
        modes = ["deflate"]
    loads = [
        Load(n, args.rate, args.seconds, args.procs, kind, mode)
        for kind in kinds
        for mode in modes
        if not (kind == "raw" and mode)
        for n in counts
    ]
    servers: list[Callable[[Load, Path | None], Fanout]] = [rt_fanout] if args.skip_bare else [rt_fanout, bare_fanout]
    orders = None
    profiles: list[Path] = []
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    if args.orders:
        print(f"orders: {args.orders} round trips", flush=True)
        profile = args.profile / "rt_orders.txt" if args.profile else None
        orders = rt_orders(args.rate, args.orders, profile)
        if profile is not None and profile.exists():
            profiles.append(profile)
    fanouts: list[Fanout] = []
    for load in loads:
        for run in servers:
            name = f"{run.__name__}-{load.kind}-{load.compression or 'none'}-{load.clients}.txt"
            profile = args.profile / name if args.profile else None
            fanouts.append(run(load, profile))
            print(fanout_row(fanouts[-1]), flush=True)
            if profile is not None and profile.exists():
                profiles.append(profile)
    idles: list[Fanout] = []
    if args.idle:
        idle = Load(args.idle, args.rate, 1.0, args.procs, kinds[-1], None, idle=True)
        for run in servers:
            idles.append(run(idle, None))
            print(idle_row(idles[-1]), flush=True)
    print_report(args, fanouts, idles, orders)
    for profile in profiles:
        print()
        print(f"profile {profile}")
        print("\n".join(profile_summary(profile)))


if __name__ == "__main__":
    main()
