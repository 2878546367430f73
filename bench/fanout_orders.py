"""Orders under fan-out load: `order.place` -> `result` over one socket, and POST /v1/orders over one keep-alive
HTTP/1.1 connection, both market orders on paper, each timed from the write to the whole answer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench.loadgen import read_response

ENVELOPE = {
    "max_position_size": 1_000_000_000,
    "max_exposure": 1000,
    "max_daily_loss": 1_000_000_000,
    "max_concurrent_positions": 100_000,
}


def now_us() -> int:
    return time.time_ns() // 1000


def order(i: int) -> dict[str, Any]:
    side = "buy" if i % 2 == 0 else "sell"
    return {"exchange": "paper", "symbol": "BTC/USDT", "side": side, "type": "market", "quantity": 0.0001}


@dataclass
class Orders:
    name: str
    rtt_us: list[int] = field(default_factory=list)
    server_us: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    priority: str = ""  # the timing client's scheduling while it measured

    def pct_ms(self, values: list[int], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000 if ordered else float("nan")

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "n": len(self.rtt_us),
            "errors": dict(self.errors),
            "priority": self.priority,
        }
        for label, values in (("rtt", self.rtt_us), ("server", self.server_us)):
            if values:
                for q in (0.5, 0.99, 1.0):
                    out[f"{label}_p{int(q * 100)}_ms"] = round(self.pct_ms(values, q), 3)
        return out


@contextlib.contextmanager
def ahead_of_the_load() -> Iterator[str]:
    """This process at real-time priority while it times orders, where the system permits it; yields which it got.

    It shares its core with the load generator's client processes. At normal priority a reply that reaches it while
    one of them runs waits for that one's time slice: on the 2-core machine that added about 1.3 ms to the order
    round trip's p99 (the server's own share did not move). The server keeps its normal priority."""
    try:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (AttributeError, OSError):  # not Linux, or no CAP_SYS_NICE
        yield "normal priority (real-time priority not permitted: its own wake-ups add to the tail)"
        return
    try:
        yield "SCHED_FIFO 1"
    finally:
        os.sched_setscheduler(0, policy, param)


async def prepare(base: str, key: str) -> None:
    """A risk envelope wide enough that thousands of small market orders are all accepted."""
    async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}, timeout=30) as http:
        (await http.put("/v1/risk/envelope", json=ENVELOPE)).raise_for_status()


async def ws_orders(ws_url: str, until_us: int, warm: int = 10, every_s: float | None = None) -> Orders:
    """order.place over one socket until `until_us`, after `warm` untimed ones: each as soon as the previous answer
    came (closed loop: the rate is whatever the server answers), or one every `every_s` (a fixed rate, as a bot
    trades; one whose answer is late goes as soon as it came, without a burst to catch up)."""
    paced = f"one every {every_s * 1000:g} ms" if every_s else "sequential, back to back"
    out = Orders(f"order.place over WebSocket ({paced})")
    async with connect(ws_url, compression=None, proxy=None, ping_interval=None) as ws:
        i = 0
        started = time.perf_counter()
        next_at = time.perf_counter()
        while now_us() < until_us:
            if every_s:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                next_at = max(next_at + every_s, time.perf_counter())
            frame = orjson.dumps({"op": "order.place", "id": i, "params": order(i)})
            sent = now_us()
            await ws.send(frame, text=True)
            reply = await _reply(ws, i)
            received = now_us()
            i += 1
            if i <= warm:
                started = time.perf_counter()
                continue
            if reply["type"] != "result":
                out.errors[str(reply.get("error", {}).get("code"))] += 1
                continue
            out.rtt_us.append(received - sent)
            out.server_us.append(reply["time_out"] - reply["time_in"])
        out.seconds = time.perf_counter() - started
    return out


async def _reply(ws: ClientConnection, request_id: int) -> dict[str, Any]:
    while True:
        message = orjson.loads(await ws.recv(decode=False))
        for m in message if isinstance(message, list) else (message,):
            if m.get("id") == request_id and m.get("type") in ("result", "error"):
                return dict(m)


async def rest_orders(base: str, key: str, until_us: int, every_s: float = 0.05, warm: int = 10) -> Orders:
    """POST /v1/orders every `every_s` (or as soon as the previous answer came) until `until_us`."""
    out = Orders(f"POST /v1/orders (one every {every_s * 1000:.0f} ms)")
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    reader, writer = await asyncio.open_connection(host, port)
    try:
        i = 0
        started = time.perf_counter()
        next_at = time.perf_counter()
        while now_us() < until_us:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            next_at += every_s
            body = orjson.dumps(order(i))
            head = (
                f"POST /v1/orders HTTP/1.1\r\nHost: {host}:{port}\r\nX-API-Key: {key}\r\n"
                f"Content-Type: application/json\r\nIdempotency-Key: {uuid.uuid4()}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            sent = now_us()
            writer.write(head.encode() + body)
            status = await read_response(reader)
            received = now_us()
            i += 1
            if i <= warm:
                started = time.perf_counter()
                continue
            if status >= 300:
                out.errors[str(status)] += 1
                continue
            out.rtt_us.append(received - sent)
        out.seconds = time.perf_counter() - started
    finally:
        writer.close()
    return out
