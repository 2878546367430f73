"""Trading: order placement latency and throughput over HTTP, and kill switch latency, on the real server.

    .venv/bin/python bench/trading.py [--orders 2000] [--warmup 200] [--connections 16] [--seconds 5]
                                      [--kill-sizes 10,100,500]

Starts `rt serve` on a free port with a fresh data dir (no market ticks, so prices hold still; tier limits raised so
the limiter runs but never refuses; a generous risk envelope), then:
  1. sends market orders one after another from one keep-alive connection, alternating buy and sell so each sell
     closes the previous buy, and reports p50/p99/max latency;
  2. sends the same orders from many keep-alive connections at once and reports orders/s;
  3. for each size, opens that many positions on a fresh account, fires POST /v1/emergency/kill and reports the
     server's latency_ms next to the client's round trip, then unlocks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.server import Server, cli, run_server

ENV = {
    "RT_PAPER_TICK_MS": "0",
    "RT_LOG_LEVEL": "warning",
    "RT_TIER_LIMITS": "pro_plus=100000000/10000000",
    "RT_LOCKOUT_THRESHOLD": "1000000",
    "RT_PAPER_BALANCE": "100000000",
}
ENVELOPE = {
    "max_position_size": 10_000_000,
    "max_exposure": 100,
    "max_daily_loss": 10_000_000,
    "max_concurrent_positions": 100_000,
}
SYMBOL = "BTC/USDT"
QUANTITY = 0.001


class Connection:
    """One HTTP/1.1 keep-alive connection on raw asyncio streams (an HTTP client library would dwarf the server)."""

    def __init__(self, port: int, key: str) -> None:
        self._port = port
        self._key = key
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Connection:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self._port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._writer is not None
        self._writer.close()
        await self._writer.wait_closed()

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self._reader is not None and self._writer is not None
        payload = json.dumps(body).encode() if body is not None else b""
        head = [
            f"{method} {path} HTTP/1.1",
            f"Host: 127.0.0.1:{self._port}",
            f"X-API-Key: {self._key}",
            f"Content-Length: {len(payload)}",
        ]
        if body is not None:
            head.append("Content-Type: application/json")
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        status_line = await self._reader.readline()
        length = 0
        while True:
            line = await self._reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        raw = await self._reader.readexactly(length)
        return int(status_line.split()[1]), json.loads(raw) if raw else None


@dataclass
class Run:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def add(self, status: int, started: float) -> None:
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds


def order(i: int) -> dict[str, Any]:
    return {"exchange": "paper", "symbol": SYMBOL, "side": "buy" if i % 2 == 0 else "sell", "quantity": QUANTITY}


async def sequential(port: int, key: str, warmup: int, count: int) -> Run:
    run = Run()
    async with Connection(port, key) as conn:
        for i in range(warmup):
            await conn.request("POST", "/v1/orders", order(i))
        started_all = time.perf_counter()
        for i in range(count):
            started = time.perf_counter()
            status, _ = await conn.request("POST", "/v1/orders", order(i))
            run.add(status, started)
        run.seconds = time.perf_counter() - started_all
    return run


async def concurrent(port: int, key: str, connections: int, seconds: float) -> Run:
    run = Run()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        async with Connection(port, key) as conn:
            i = 0
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status, _ = await conn.request("POST", "/v1/orders", order(i))
                run.add(status, started)
                i += 1

    started_all = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    run.seconds = time.perf_counter() - started_all
    return run


@dataclass
class KillRun:
    positions: int
    server_ms: float
    client_ms: float
    closed: int
    failed: int


async def kill(port: int, key: str, positions: int) -> KillRun:
    async with Connection(port, key) as conn:
        body = {"exchange": "paper", "symbol": SYMBOL, "side": "long", "quantity": QUANTITY}
        for _ in range(positions):
            status, answer = await conn.request("POST", "/v1/positions", body)
            assert status == 201, answer
        started = time.perf_counter()
        status, report = await conn.request("POST", "/v1/emergency/kill", {"reason": "bench", "confirm": True})
        client_ms = (time.perf_counter() - started) * 1000
        assert status == 200, report
        status, answer = await conn.request("POST", "/v1/risk/kill", {"action": "UNLOCK"})
        assert status == 200, answer
    return KillRun(positions, report["latency_ms"], client_ms, report["positions_closed"], report["positions_failed"])


def fresh_key(server: Server, name: str) -> str:
    """A new account (its own book, so earlier runs do not weigh on it) and a full key for it."""
    for args in (
        ["accounts", "create", name],
        ["keys", "create", "--account", name, "--scopes", "full", "--tier", "pro_plus"],
    ):
        done = cli(server.data_dir, *args, "--json")
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
    return str(json.loads(done.stdout)["key"])


async def put_envelope(port: int, key: str) -> None:
    async with Connection(port, key) as conn:
        status, answer = await conn.request("PUT", "/v1/risk/envelope", ENVELOPE)
        assert status == 200, answer


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--kill-sizes", default="10,100,500")
    args = parser.parse_args()
    sizes = [int(s) for s in args.kill_sizes.split(",") if s]

    with tempfile.TemporaryDirectory() as tmp, run_server(Path(tmp) / "data", ENV) as server:
        assert server.key, "no bootstrap key"
        port = server.port
        asyncio.run(put_envelope(port, server.key))
        seq = asyncio.run(sequential(port, server.key, args.warmup, args.orders))
        con = asyncio.run(concurrent(port, server.key, args.connections, args.seconds))
        kills = []
        for size in sizes:
            key = fresh_key(server, f"bench-kill-{size}")
            asyncio.run(put_envelope(port, key))
            kills.append(asyncio.run(kill(port, key, size)))

    print(
        f"rt trading: paper venue, no ticks, log level warning, market orders of {QUANTITY} {SYMBOL}, "
        "alternating buy/sell on one account"
    )
    print()
    print(f"{'order placement':<34} {'orders':>7} {'orders/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  statuses")
    rows = [("sequential, 1 connection", seq), (f"concurrent, {args.connections} connections", con)]
    for label, run in rows:
        print(
            f"{label:<34} {len(run.latencies_ms):>7} {run.rate:>9.0f} {statistics.median(run.latencies_ms):>8.2f} "
            f"{run.pct(0.99):>8.2f} {max(run.latencies_ms):>8.2f}  {dict(sorted(run.statuses.items()))}"
        )
    first, last = seq.latencies_ms[: len(seq.latencies_ms) // 4], seq.latencies_ms[-len(seq.latencies_ms) // 4 :]
    print(
        f"sequential p50, first quarter {statistics.median(first):.2f} ms, last quarter "
        f"{statistics.median(last):.2f} ms"
    )
    print()
    print(f"{'kill switch':<34} {'closed':>7} {'failed':>7} {'server ms':>10} {'round trip ms':>14}")
    for k in kills:
        print(
            f"{f'{k.positions} open positions':<34} {k.closed:>7} {k.failed:>7} {k.server_ms:>10.2f} "
            f"{k.client_ms:>14.2f}"
        )


if __name__ == "__main__":
    main()
