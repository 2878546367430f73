"""Webhooks out and alerts in, against a real `rt serve` (SQLite, one process) and real receivers on 127.0.0.1.

    .venv/bin/python bench/webhooks.py [--quick] [--orders 200] [--connections 8] [--queued 10000]
        [--alerts 200] [--server-cpus 0] [--client-cpus 1]

Rows:
  1. event -> delivery latency to one local receiver: market orders over REST one at a time, every event they make
     delivered; latency = the receiver's arrival time - the event's `timestamp` in the body (to the millisecond);
  2. deliveries/s with 10 endpoints on one account, orders over `--connections` connections;
  3. a healthy endpoint alone, then beside a dead one (it accepts the connection and never answers, so each of its
     deliveries holds a slot for the whole timeout): the healthy one's p50/p99 both ways;
  4. `--queued` deliveries queued while the receivers do not answer (held until the 60 s timeout), the server stopped
     (SIGTERM hands every claim back) and started again with the receivers answering: time to drain, deliveries/s;
  5. alert -> order: POST /v1/alerts/{hook} one at a time, the round trip of the 202 that carries the order id
     (skipped with a note while the route answers 404).
Servers are pinned to `--server-cpus`, this process (load and receivers, one thread each) to `--client-cpus`
(sched_setaffinity, as taskset does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scaleout import ENVELOPE, Conn, order, parse_cpus, pinned
from tests.e2e.receiver import HANG, OK, Receiver, Request, receiving
from tests.e2e.server import Server, cli, run_server

ENV = {
    "RT_PAPER_TICK_MS": "0",
    "RT_LOG_LEVEL": "warning",
    "RT_TIER_LIMITS": "pro_plus=100000000/10000000",
    "RT_LOCKOUT_THRESHOLD": "1000000",
    "RT_PAPER_BALANCE": "100000000",
    "RT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "RT_ALERT_RATE": "100000000/10000000",
}
QUEUE_TIMEOUT_S = "60"
WAIT_S = 300.0


@dataclass
class Row:
    name: str
    deliveries: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] | None = None
    note: str = ""

    def cells(self) -> str:
        rate = f"{self.deliveries / self.seconds:>9.0f}" if self.seconds else f"{'-':>9}"
        lat = sorted(self.latencies_ms or [])
        p50 = f"{statistics.median(lat):>8.2f}" if lat else f"{'-':>8}"
        p99 = f"{lat[min(len(lat) - 1, int(0.99 * len(lat)))]:>8.2f}" if lat else f"{'-':>8}"
        seconds = f"{self.seconds:>8.2f}" if self.seconds else f"{'-':>8}"
        return f"{self.name:<40} {self.deliveries:>10} {seconds} {rate} {p50} {p99}  {self.note}"


def sent_at(body: dict[str, Any]) -> float:
    return datetime.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def lag_ms(request: Request) -> float:
    return (request.at - sent_at(request.json())) * 1000


def wait(done: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {what} not done within {timeout:.0f} s")
        time.sleep(0.02)


class Account:
    """A fresh account with a full key (the CLI on the server's data dir), and its REST client."""

    def __init__(self, server: Server) -> None:
        name = f"b-{uuid.uuid4().hex[:10]}"
        made = cli(server.data_dir, "accounts", "create", name, "--json")
        assert made.returncode == 0, made.stderr
        issued = cli(
            server.data_dir, "keys", "create", "--account", name, "--scopes", "full", "--tier", "pro_plus", "--json"
        )
        assert issued.returncode == 0, issued.stderr
        self.key = str(orjson.loads(issued.stdout)["key"])
        self.port = server.port
        self.http = httpx.Client(base_url=server.url, headers={"X-API-Key": self.key}, timeout=30)
        answer = self.http.put("/v1/risk/envelope", json=ENVELOPE)
        assert answer.status_code == 200, answer.text

    def endpoint(self, url: str) -> str:
        made = self.http.post("/v1/webhooks", json={"url": url, "events": ["*"]})
        assert made.status_code == 201, made.text
        return str(made.json()["id"])

    def queued(self, endpoint_id: str, status: str | None = None) -> int:
        params: dict[str, Any] = {"endpoint_id": endpoint_id, "limit": 1}
        if status:
            params["status"] = status
        answer = self.http.get("/v1/webhooks/events", params=params)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["total"])

    def orders(self, count: int, connections: int) -> None:
        asyncio.run(send_orders(self.port, self.key, count, connections))


async def send_orders(port: int, key: str, count: int, connections: int) -> None:
    conns = [await Conn(port, "webhooks").open() for _ in range(connections)]

    async def worker(c: int) -> None:
        for i in range(c, count, connections):
            status, answer = await conns[c].request("POST", "/v1/orders", key, order(i))
            assert status == 201, answer

    try:
        await asyncio.gather(*(worker(c) for c in range(connections)))
    finally:
        for conn in conns:
            conn.close()


def delivered(receiver: Receiver, account: Account, endpoints: dict[str, str], mark: int = 0) -> list[Request]:
    """Wait until each path got every delivery the log holds for its endpoint, and none is left pending; the first
    request of each delivery (since request number `mark`)."""
    expected = {path: account.queued(endpoint_id) for path, endpoint_id in endpoints.items()}

    def firsts() -> dict[tuple[str, str], Request]:
        out: dict[tuple[str, str], Request] = {}
        for r in receiver.requests()[mark:]:
            if r.path in endpoints:
                out.setdefault((r.path, r.webhook_id), r)
        return out

    wait(lambda: len(firsts()) >= sum(expected.values()), "delivery")
    wait(lambda: not any(account.queued(e, "pending") for e in endpoints.values()), "the delivery log")
    return list(firsts().values())


def latency_row(server: Server, receiver: Receiver, args: argparse.Namespace) -> Row:
    """One order at a time, each after the delivery of the last one's order.created: nothing queues."""
    account = Account(server)
    made = account.http.post("/v1/webhooks", json={"url": receiver.url("/one"), "events": ["order.created"]})
    assert made.status_code == 201, made.text
    for i in range(args.orders):
        answer = account.http.post("/v1/orders", json=order(i))
        assert answer.status_code == 201, answer.text
        receiver.wait_count(i + 1, WAIT_S, path="/one")
    got = receiver.requests("/one")
    return Row("event -> delivery, 1 endpoint, idle", len(got), 0.0, [lag_ms(r) for r in got], "one order at a time")


def fan_row(server: Server, receiver: Receiver, args: argparse.Namespace) -> Row:
    account = Account(server)
    endpoints = {f"/fan{i}": account.endpoint(receiver.url(f"/fan{i}")) for i in range(10)}
    started = time.time()
    account.orders(args.orders, args.connections)
    got = delivered(receiver, account, endpoints)
    seconds = max(r.at for r in got) - started
    name = f"10 endpoints, {args.connections} connections"
    return Row(name, len(got), seconds, [lag_ms(r) for r in got], f"{args.orders} orders; latency includes queueing")


def dead_rows(server: Server, receiver: Receiver, args: argparse.Namespace) -> list[Row]:
    rows = []
    for dead in (False, True):
        account = Account(server)
        path = f"/healthy-{int(dead)}"
        endpoints = {path: account.endpoint(receiver.url(path))}
        dead_id = account.endpoint(receiver.url("/dead")) if dead else ""
        started = time.time()
        account.orders(args.orders, args.connections)
        got = delivered(receiver, account, endpoints)
        name = "healthy endpoint " + ("beside a dead one" if dead else "alone")
        note = f"dead one: {len(receiver.requests('/dead'))} requests held" if dead else ""
        rows.append(Row(name, len(got), max(r.at for r in got) - started, [lag_ms(r) for r in got], note))
        if dead_id:
            assert account.http.delete(f"/v1/webhooks/{dead_id}").status_code == 200
    return rows


def drain_row(root: Path, cpus: set[int], args: argparse.Namespace) -> Row:
    data_dir = root / "drain"
    with receiving() as receiver:
        paths = [f"/q{i}" for i in range(10)]
        for path in paths:
            receiver.answer(path, then=HANG)
        with started(data_dir, {**ENV, "RT_WEBHOOK_TIMEOUT_S": QUEUE_TIMEOUT_S}, cpus) as first:
            account = Account(first)
            endpoints = {path: account.endpoint(receiver.url(path)) for path in paths}
            # About 4 events an order, each for 10 endpoints.
            while (left := args.queued - sum(account.queued(e) for e in endpoints.values())) > 0:
                account.orders(max(1, min(200, left // 40)), args.connections)
            queued = sum(account.queued(e) for e in endpoints.values())
            stop_started = time.monotonic()
        stopped_s = time.monotonic() - stop_started
        for path in paths:
            receiver.answer(path, then=OK)
        receiver.down()  # drop the connections the stopped server left hanging
        receiver.up()
        mark = len(receiver.requests())
        with started(data_dir, ENV, cpus) as second:
            ready = time.time()
            account.http = httpx.Client(base_url=second.url, headers={"X-API-Key": account.key}, timeout=30)
            got = delivered(receiver, account, endpoints, mark)
            seconds = max(r.at for r in got) - ready
            sent = sum(1 for r in receiver.requests()[mark:] if r.path in endpoints)
    note = f"{queued} queued over 10 endpoints; SIGTERM took {stopped_s:.1f} s; {sent - len(got)} sent twice"
    return Row(f"{args.queued} queued: drain after a restart", len(got), seconds, None, note)


def alert_row(server: Server, args: argparse.Namespace) -> Row:
    account = Account(server)
    made = account.http.post("/v1/alert-hooks", json={"max_quantity": 1, "symbols": ["BTC/USDT"]})
    if made.status_code == 404:
        return Row("alert -> order (POST /v1/alerts/{hook})", note="skipped: /v1/alert-hooks answers 404")
    assert made.status_code == 201, made.text
    hook = made.json()
    latencies = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for i in range(args.alerts):
            body = {"passphrase": hook["passphrase"], "symbol": "BTCUSDT", "action": "buy" if i % 2 == 0 else "sell"}
            body |= {"quantity": 0.001, "id": f"a-{i}"}
            started = time.perf_counter()
            answer = http.post(f"/v1/alerts/{hook['id']}", json=body)
            latencies.append((time.perf_counter() - started) * 1000)
            if answer.status_code == 404 and i == 0:
                return Row("alert -> order (POST /v1/alerts/{hook})", note="skipped: /v1/alerts/{hook} answers 404")
            assert answer.status_code == 202 and answer.json()["order_id"], answer.text
    return Row("alert -> order (POST /v1/alerts/{hook})", args.alerts, sum(latencies) / 1000, latencies, "round trip")


@contextlib.contextmanager
def started(data_dir: Path, env: dict[str, str], cpus: set[int]) -> Iterator[Server]:
    """`rt serve` on `cpus` (it inherits them from this thread while it starts); this thread keeps its own."""
    with contextlib.ExitStack() as stack:
        with pinned(cpus):
            server = stack.enter_context(run_server(data_dir, env))
        yield server


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: small counts")
    parser.add_argument("--orders", type=int, help="orders per row (200; --quick 20)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--queued", type=int, help="deliveries queued before the restart (10000; --quick 500)")
    parser.add_argument("--alerts", type=int, help="alerts sent (200; --quick 20)")
    parser.add_argument("--server-cpus", default="", help="CPUs for the server (default: all but the last)")
    parser.add_argument("--client-cpus", default="", help="CPUs for this process (default: the last)")
    args = parser.parse_args()
    sizes = (
        {"orders": 20, "queued": 500, "alerts": 20} if args.quick else {"orders": 200, "queued": 10000, "alerts": 200}
    )
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    available = sorted(os.sched_getaffinity(0))
    server_cpus = parse_cpus(args.server_cpus) if args.server_cpus else set(available[:-1] or available)
    client_cpus = parse_cpus(args.client_cpus) if args.client_cpus else set(available[-1:])
    os.sched_setaffinity(0, client_cpus)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp, receiving() as receiver:
        receiver.answer("/dead", then=HANG)
        root = Path(tmp)
        with started(root / "data", ENV, server_cpus) as server:
            log("event -> delivery latency")
            rows.append(latency_row(server, receiver, args))
            log("10 endpoints")
            rows.append(fan_row(server, receiver, args))
            log("a dead endpoint beside a healthy one")
            rows.extend(dead_rows(server, receiver, args))
            log("alert -> order")
            rows.append(alert_row(server, args))
        log(f"{args.queued} queued deliveries across a restart")
        rows.insert(4, drain_row(root, server_cpus, args))
    print()
    print(
        f"webhooks: SQLite, one rt serve on CPUs {fmt(server_cpus)}; load and receivers on CPUs {fmt(client_cpus)}"
        f"{' (shared)' if server_cpus & client_cpus else ''}; latency = arrival - event timestamp (ms resolution)"
    )
    print(f"{'row':<40} {'deliveries':>10} {'seconds':>8} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8}  note")
    for row in rows:
        print(row.cells())


def fmt(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


if __name__ == "__main__":
    main()
