"""Scale-out: orders, Cerberus limits, the kill switch and WebSocket fan-out over several real `rt serve` processes.

    .venv/bin/python bench/scaleout.py [--quick] [--json] [--seconds 5] [--connections 32] [--accounts 100]
        [--kill-positions 500] [--burst 200] [--limit 5] [--instances 1,2,3] [--no-sqlite]
        [--ws-clients 500] [--ws-rate 100] [--ws-seconds 8] [--server-cpus 0] [--client-cpus 1]
        [--profile DIR]

Every run starts real servers: SQLite, one process (the embedded default), for comparison; then 1, 2 and 3
instances on one fresh PostgreSQL database (dropped afterwards) and one Redis key prefix, as tests/e2e/cluster.py
and docker-compose run them. Market ticks are off, so prices hold still. Each run measures:
  1. POST /v1/orders (market orders, alternating buy and sell) on one account: one request at a time, cycling over
     the instances (latency), then `--connections` keep-alive connections spread over the instances (throughput);
  2. the same over `--accounts` accounts, each connection cycling over its share of them;
  3. a burst of `--burst` concurrent POST /v1/positions over every instance on an account whose
     max_concurrent_positions is `--limit`: the limit held if no more than `--limit` were accepted;
  4. `--kill-positions` positions opened on one account over every instance, then POST /v1/emergency/kill on the
     first one: the server's latency_ms, the client's round trip, and a market order refused (423) by every instance.
Then WebSocket fan-out: `rt serve` and `rt serve --workers 2` (PostgreSQL and Redis both), `--ws-clients`
subscribers to ticks:BTC/USDT over bench/ws_fanout.py's raw client, delivered events/s and tick delay.

The load generator is raw asyncio HTTP/1.1 over persistent connections (one process, uvloop when installed).
Servers are pinned to `--server-cpus` and the load generator to `--client-cpus` (sched_setaffinity, as taskset does;
a server inherits it from the process that starts it). PostgreSQL and Redis are the machine's services: not pinned.
`--profile DIR` times every request, asyncpg statement, pool checkout and Redis command of the first instance of
each PostgreSQL run (wrappers the bench installs in that server process) and prints where the time went.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import pstats
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ws_fanout import Fanout, Load, _tokens, cpu_s, machine_cpu, raise_nofile, run_clients, run_loop
from rt.config import Settings
from rt.runtime import open_runtime
from tests.e2e.server import Server, run_server
from tests.pg import POSTGRES_URL, drop_database, fresh_database, postgres_available

SYMBOL = "BTC/USDT"
QUANTITY = 0.001
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
TARGETS = {
    "limits": "limits never breached",
    "p99": "single-account order p99 < 10 ms on PostgreSQL",
    "growth": "many-account orders/s grows with instances",
    "kill": "kill of {n} positions < 250 ms",
}


# pinning


def cpus_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    return "?"


def pids_of(name: str, title: str = "") -> list[int]:
    """Processes called `name` whose command line holds `title` (a PostgreSQL backend names its database there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name and title in (entry / "cmdline").read_text():
                    found.append(int(entry.name))
    return found


def cpu_snapshot(servers: list[int], database: str) -> dict[str, dict[int, float] | float]:
    """CPU seconds so far: the servers, the PostgreSQL backends of the run's database, redis-server, this process,
    and the whole machine."""

    def each(pids: list[int]) -> dict[int, float]:
        spent = {}
        for pid in pids:
            with contextlib.suppress(OSError):
                spent[pid] = cpu_s(pid)
        return spent

    return {
        "rt": each(servers),
        "postgres": each(pids_of("postgres", database)) if database else {},
        "redis": each(pids_of("redis-server")),
        "loadgen": each([os.getpid()]),
        "machine": machine_cpu()[0],
    }


def cpu_share(before: dict[str, Any], after: dict[str, Any], seconds: float) -> dict[str, float]:
    """% of one CPU over the window, per group (a process counts from its first snapshot, or from 0 if it started
    inside the window); `other` is the rest of the machine: other programs, the kernel's loopback work."""
    out: dict[str, float] = {}
    for name, now in after.items():
        if name == "machine":
            continue
        out[name] = sum(cpu - before[name].get(pid, 0.0) for pid, cpu in now.items())
    busy = after["machine"] - before["machine"]
    out["other"] = max(0.0, busy - sum(out.values()))
    return {k: round(100 * v / seconds) for k, v in out.items()}


@contextlib.contextmanager
def pinned(cpus: set[int]) -> Iterator[None]:
    """This thread on `cpus` for the block: a process started inside inherits them, as under `taskset -c`."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def parse_cpus(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


# the HTTP client


class Conn:
    """One HTTP/1.1 keep-alive connection on raw asyncio streams; the key is per request."""

    def __init__(self, port: int, phase: str = "") -> None:
        self.port = port
        self.phase = phase  # sent as X-Bench-Phase: the timed server (--profile) sums each phase apart
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> Conn:
        self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    async def request(self, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
        assert self._reader is not None and self._writer is not None
        payload = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nX-API-Key: {key}\r\n"
        head += f"Content-Length: {len(payload)}\r\nX-Bench-Phase: {self.phase}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        self._writer.write(head.encode() + b"\r\n" + payload)
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
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


def order(i: int) -> dict[str, Any]:
    return {"exchange": "paper", "symbol": SYMBOL, "side": "buy" if i % 2 == 0 else "sell", "quantity": QUANTITY}


OPEN = {"exchange": "paper", "symbol": SYMBOL, "side": "long", "quantity": QUANTITY}


@dataclass
class Run:
    label: str
    connections: int
    requests: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        spent = self.cpu.get("rt", 0) / 100 * self.seconds
        return {
            "rt_cpu_ms_per_order": round(1000 * spent / len(self.latencies_ms), 2)
            if self.cpu and self.latencies_ms
            else None,
            "label": self.label,
            "connections": self.connections,
            "orders": len(self.latencies_ms),
            "orders_per_s": round(self.rate, 1),
            "p50_ms": round(statistics.median(self.latencies_ms), 3) if self.latencies_ms else None,
            "p99_ms": round(self.pct(0.99), 3),
            "max_ms": round(max(self.latencies_ms), 3) if self.latencies_ms else None,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "cpu_percent": self.cpu,
        }


async def sequential(ports: list[int], key: str, warmup: int, count: int) -> Run:
    """One request at a time, each to the next instance in turn."""
    conns = [await Conn(p, "1 account, one at a time").open() for p in ports]
    run = Run("1 account, one at a time", 1)
    try:
        for i in range(warmup + count):
            started = time.perf_counter()
            status, _ = await conns[i % len(conns)].request("POST", "/v1/orders", key, order(i // len(conns)))
            if i >= warmup:
                run.latencies_ms.append((time.perf_counter() - started) * 1000)
                run.statuses[status] += 1
    finally:
        for c in conns:
            c.close()
    run.seconds = sum(run.latencies_ms) / 1000
    return run


async def concurrent(label: str, g: Group, keys: list[str], args: argparse.Namespace) -> Run:
    """`--connections` connections, connection c to instance c % n, each cycling over keys c, c + connections, ...;
    the CPU the servers, PostgreSQL, Redis and this process spent over the window."""
    ports, connections, seconds, database = g.ports, args.connections, args.seconds, g.database
    pids = [s.process.pid for s in g.servers]
    run = Run(label, connections)
    warm = 0.5
    begin = time.perf_counter() + warm
    deadline = begin + seconds

    async def cpu() -> None:
        await asyncio.sleep(begin - time.perf_counter())
        before = cpu_snapshot(pids, database)
        await asyncio.sleep(deadline - time.perf_counter())
        run.cpu = cpu_share(before, cpu_snapshot(pids, database), seconds)

    async def worker(c: int) -> None:
        conn = await Conn(ports[c % len(ports)], label).open()
        mine = keys[c % len(keys) :: connections] or [keys[c % len(keys)]]
        i = 0
        try:
            while True:
                started = time.perf_counter()
                if started >= deadline:
                    break
                status, _ = await conn.request("POST", "/v1/orders", mine[i % len(mine)], order(i // len(mine)))
                if started >= begin:
                    run.latencies_ms.append((time.perf_counter() - started) * 1000)
                    run.statuses[status] += 1
                i += 1
        finally:
            conn.close()

    await asyncio.gather(cpu(), *(worker(c) for c in range(connections)))
    run.seconds = seconds
    return run


async def put_envelopes(ports: list[int], keys: list[str], envelope: dict[str, Any]) -> None:
    conns = [await Conn(p).open() for p in ports]
    try:

        async def put(c: int) -> None:
            for key in keys[c :: len(conns)]:
                status, answer = await conns[c].request("PUT", "/v1/risk/envelope", key, envelope)
                assert status == 200, answer

        await asyncio.gather(*(put(c) for c in range(len(conns))))
    finally:
        for conn in conns:
            conn.close()


async def open_count(port: int, key: str) -> int:
    conn = await Conn(port).open()
    try:
        status, answer = await conn.request("GET", "/v1/positions?status=open&limit=1", key)
        assert status == 200, answer
        return int(answer["total"])
    finally:
        conn.close()


@dataclass
class Burst:
    limit: int
    attempts: int
    accepted: int
    statuses: dict[str, int]
    open_per_instance: list[int]

    @property
    def held(self) -> bool:
        return self.accepted <= self.limit and all(n <= self.limit for n in self.open_per_instance)


async def burst(ports: list[int], key: str, attempts: int, limit: int) -> Burst:
    await put_envelopes(ports[:1], [key], {**ENVELOPE, "max_concurrent_positions": limit})
    conns = [await Conn(ports[i % len(ports)], "limit burst").open() for i in range(attempts)]
    go = asyncio.Event()

    async def one(conn: Conn) -> int:
        await go.wait()
        status, _ = await conn.request("POST", "/v1/positions", key, OPEN)
        return status

    tasks = [asyncio.create_task(one(c)) for c in conns]
    await asyncio.sleep(0)
    go.set()
    statuses = Counter(await asyncio.gather(*tasks))
    for c in conns:
        c.close()
    counts = [await open_count(p, key) for p in ports]
    return Burst(limit, attempts, statuses[201], {str(k): v for k, v in sorted(statuses.items())}, counts)


@dataclass
class Kill:
    positions: int
    opened: int
    closed: int
    failed: int
    server_ms: float
    client_ms: float
    refused: list[int]  # per instance, the status of a market order after the kill

    @property
    def locked_everywhere(self) -> bool:
        return all(s == 423 for s in self.refused)


async def kill(ports: list[int], key: str, positions: int) -> Kill:
    conns = [await Conn(ports[c % len(ports)], "kill: opening").open() for c in range(min(16, positions))]

    async def opener(c: int) -> None:
        for _ in range(c, positions, len(conns)):
            status, answer = await conns[c].request("POST", "/v1/positions", key, OPEN)
            assert status == 201, answer

    await asyncio.gather(*(opener(c) for c in range(len(conns))))
    for c in conns:
        c.close()
    opened = await open_count(ports[0], key)
    conn = await Conn(ports[0], "kill").open()
    started = time.perf_counter()
    status, report = await conn.request("POST", "/v1/emergency/kill", key, {"reason": "bench", "confirm": True})
    client_ms = (time.perf_counter() - started) * 1000
    conn.close()
    assert status == 200, report
    refused = []
    for port in ports:
        c = await Conn(port).open()
        status, _ = await c.request("POST", "/v1/orders", key, order(0))
        refused.append(status)
        c.close()
    return Kill(
        positions,
        opened,
        report["positions_closed"],
        report["positions_failed"],
        float(report["latency_ms"]),
        client_ms,
        refused,
    )


# servers


@dataclass
class Group:
    store: str  # "sqlite" or "postgresql"
    servers: list[Server]
    env: dict[str, str]  # what the instances share
    database: str = ""  # the PostgreSQL database's name

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    @property
    def name(self) -> str:
        return f"{self.store} x{len(self.servers)}"


def shared_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        **ENV,
        "RT_DATABASE_URL": database_url,
        "RT_REDIS_URL": redis_url,
        "RT_REDIS_PREFIX": f"rt-bench-{uuid.uuid4().hex[:12]}",
        "RT_KEY_PEPPER": secrets.token_hex(32),
        "RT_SECRET_KEY": secrets.token_hex(32),
    }


# `rt serve` with timing around every HTTP request, asyncpg statement, pool checkout and Redis command, per route
# (bench code only: the server's own code is unchanged). A thread rewrites the sums to a JSON file each second.
TIMED = """
import asyncio, collections, contextvars, cProfile, json, os, re, threading, time
import asyncpg.connection, asyncpg.pool, redis.asyncio.client as rc
import rt.app
OUT, current, stats = os.environ["RT_BENCH_TIMINGS"], contextvars.ContextVar("bench", default=None), {}
def timed(kind, fn):
    async def wrapper(self, *args, **kw):
        acc = current.get()
        if acc is None:  # outside a request: summed per background task (its name up to the first '-' or digit)
            task = asyncio.current_task()
            label = "background: " + re.split(r"[-0-9]", task.get_name() if task else "none", maxsplit=1)[0]
            acc = stats.setdefault(label, collections.Counter())
            acc["n"] = 1
        name, what = kind, ""
        if args and isinstance(args[0], str) and "advisory" in args[0]:
            name = "pg_lock"
        if kind in ("pg", "pg_lock") and args:
            what = " ".join(str(args[0]).split())[:48]
        elif kind == "redis":
            what = str(args[0]) if args else f"pipeline of {len(getattr(self, 'command_stack', []))}"
        started = time.perf_counter()
        try:
            return await fn(self, *args, **kw)
        finally:
            ms = (time.perf_counter() - started) * 1000
            acc[name + "_ms"] += ms
            acc[name + "_n"] += 1
            if what:
                acc[f"{kind}|{what}|n"] += 1
                acc[f"{kind}|{what}|ms"] += ms
    return wrapper
for m in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
    setattr(asyncpg.connection.Connection, m, timed("pg", getattr(asyncpg.connection.Connection, m)))
asyncpg.pool.Pool._acquire = timed("pool_wait", asyncpg.pool.Pool._acquire)
rc.Redis.execute_command = timed("redis", rc.Redis.execute_command)
rc.Pipeline.execute = timed("redis", rc.Pipeline.execute)
class Timed:
    def __init__(self, app):
        self.app = app
    def __getattr__(self, name):
        return getattr(self.app, name)
    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        acc, started = collections.Counter(), time.perf_counter()
        token = current.set(acc)
        phase = dict(scope["headers"]).get(b"x-bench-phase", b"").decode()
        profiler = cProfile.Profile() if phase == "kill" else None
        if profiler is not None:
            profiler.enable()
        try:
            await self.app(scope, receive, send)
        finally:
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(OUT + ".kill.pstats")
            current.reset(token)
            acc["wall_ms"] += (time.perf_counter() - started) * 1000
            acc["n"] += 1
            route = (phase + ": " if phase else "") + scope["method"] + " " + scope["path"]
            stats.setdefault(route, collections.Counter()).update(acc)
create = rt.app.create_app
rt.app.create_app = lambda settings: Timed(create(settings))
def dump():
    while True:
        time.sleep(1)
        try:
            snapshot = {k: dict(v) for k, v in list(stats.items())}
        except RuntimeError:
            continue
        with open(OUT + ".tmp", "w") as f:
            json.dump(snapshot, f)
        os.replace(OUT + ".tmp", OUT)
threading.Thread(target=dump, daemon=True).start()
from rt.cli import main
whole = cProfile.Profile()
whole.enable()
try:
    main(["serve"])
finally:  # reached on SIGINT (uvicorn re-raises it as KeyboardInterrupt), not on SIGTERM
    whole.disable()
    whole.dump_stats(OUT + ".all.pstats")
"""


def timing_summary(path: Path) -> list[str]:
    """Per route: requests, mean wall time, and how much of it went to PostgreSQL (statements, the account's advisory
    lock, waiting for a pooled connection) and to Redis; the rest is Python on the event loop and waiting for it."""
    stats: dict[str, dict[str, float]] = json.loads(path.read_text())
    out = [
        f"{'phase: route':<52} {'requests':>8} {'wall ms':>8} {'pg ms':>7} {'pg n':>5} {'lock ms':>8} {'pool ms':>8} "
        f"{'redis ms':>9} {'redis n':>7} {'rest ms':>8}   (means per request)"
    ]
    requests = {k: v for k, v in stats.items() if not k.startswith("background: ")}
    for route, s in sorted(requests.items(), key=lambda kv: -kv[1].get("wall_ms", 0))[:8]:
        n = s.get("n", 0) or 1
        parts = [s.get(f"{k}_ms", 0.0) / n for k in ("pg", "pg_lock", "pool_wait", "redis")]
        rest = s.get("wall_ms", 0.0) / n - sum(parts)
        out.append(
            f"{route[:52]:<52} {int(s.get('n', 0)):>8} {s.get('wall_ms', 0) / n:>8.2f} {parts[0]:>7.2f} "
            f"{s.get('pg_n', 0) / n:>5.1f} {parts[1]:>8.2f} {parts[2]:>8.2f} {parts[3]:>9.2f} "
            f"{s.get('redis_n', 0) / n:>7.1f} {rest:>8.2f}"
        )
    out.append("  outside requests, per background task: total PostgreSQL and Redis calls over the run")
    for route, s in sorted(stats.items(), key=lambda kv: -(kv[1].get("pg_ms", 0) + kv[1].get("redis_ms", 0))):
        if route.startswith("background: "):
            out.append(
                f"    {route[12:]:<28} pg {int(s.get('pg_n', 0)):>7} calls {s.get('pg_ms', 0):>9.0f} ms   "
                f"redis {int(s.get('redis_n', 0)):>7} calls {s.get('redis_ms', 0):>9.0f} ms"
            )
    for route, s in stats.items():
        if route.endswith(("one at a time: POST /v1/orders", "kill: POST /v1/emergency/kill")):
            n = s.get("n", 0) or 1
            out.append(f"  {route}, each call per request: count, mean ms")
            calls = sorted((k for k in s if k.count("|") == 2 and k.endswith("|n")), key=lambda k: -s[k[:-1] + "ms"])
            for k in calls:
                out.append(f"    {s[k] / n:4.1f} x {s[k[:-1] + 'ms'] / s[k]:6.2f} ms  {k[:-2]}")
    whole = Path(str(path) + ".all.pstats")
    if whole.exists():
        raw_all: dict[Any, Any] = pstats.Stats(str(whole)).stats  # type: ignore[attr-defined]
        busy = sum(tt for (_, _, tt, _, _) in raw_all.values())
        out.append(
            f"  the whole process under cProfile (slower than unprofiled): {busy:.1f} s of Python on the main thread; "
            "functions by own time, then rt functions by time spent inside (cumulative), as % of that"
        )
        for (file, line, fn), (_, calls, tt, _ct, _) in sorted(raw_all.items(), key=lambda kv: -kv[1][2])[:14]:
            short = file.rsplit("site-packages/", 1)[-1].split("/rt/", 1)[-1]
            out.append(f"    {100 * tt / busy:5.1f}% own {calls:>8} calls  {short}:{line}({fn})")
        shown = 0
        for (file, _line, fn), (_, calls, _tt, ct, _) in sorted(raw_all.items(), key=lambda kv: -kv[1][3]):
            if "/rt/" not in file or fn.startswith("<") or fn in ("main", "serve", "run", "open_runtime"):
                continue
            out.append(f"    {100 * ct / busy:5.1f}% cum {calls:>8} calls  rt/{file.split('/rt/', 1)[1]}:{fn}")
            shown += 1
            if shown >= 16:
                break
    kill = Path(str(path) + ".kill.pstats")
    if kill.exists():
        out.append("  POST /v1/emergency/kill under cProfile (inflates Python time), rt functions by cumulative time:")
        raw: dict[Any, Any] = pstats.Stats(str(kill)).stats  # type: ignore[attr-defined]
        wall = max(ct for (_, _, _, ct, _) in raw.values())
        rows = sorted(raw.items(), key=lambda kv: -kv[1][3])
        shown = 0
        for (file, _line, fn), (_, calls, tt, ct, _) in rows:
            if "/rt/" not in file or fn.startswith("<"):
                continue
            where = file.split("/rt/", 1)[1]
            out.append(f"    {100 * ct / wall:5.1f}% cum {100 * tt / wall:5.1f}% own {calls:>6} calls  rt/{where}:{fn}")
            shown += 1
            if shown >= 16:
                break
        out.append("  ... and everything by own time:")
        for (file, line, fn), (_, calls, tt, _ct, _) in sorted(raw.items(), key=lambda kv: -kv[1][2])[:12]:
            short = file.rsplit("site-packages/", 1)[-1].split("/rt/", 1)[-1]
            out.append(f"    {100 * tt / wall:5.1f}% own {calls:>6} calls  {short}:{line}({fn})")
    return out


@contextlib.contextmanager
def group(
    store: str, size: int, root: Path, redis_url: str, cpus: set[int], profile: Path | None = None
) -> Iterator[Group]:
    """`size` instances; on PostgreSQL a fresh database, dropped at the end, and one Redis prefix. Every process is
    stopped by its PID (SIGTERM) when the block ends."""
    database_url = asyncio.run(fresh_database()) if store == "postgresql" else ""
    env = shared_env(database_url, redis_url) if database_url else dict(ENV)
    try:
        with contextlib.ExitStack() as stack:
            servers = []
            for index in range(size):
                own = {**env, "RT_BOOTSTRAP": "true" if index == 0 else "false"}
                program: tuple[str, ...] = ("-m", "rt", "serve")
                if profile is not None and index == 0:
                    program, own = ("-c", TIMED), {**own, "RT_BENCH_TIMINGS": str(profile)}
                with pinned(cpus):
                    servers.append(stack.enter_context(run_server(root / f"i{index}", own, program=program)))
            env["RT_DATA_DIR"] = str(servers[0].data_dir)
            yield Group(store, servers, env, database_url.rsplit("/", 1)[-1])
            if profile is not None:
                # SIGINT: uvicorn re-raises the signal it caught, and only SIGINT lets the profile be written.
                servers[0].process.send_signal(signal.SIGINT)
                servers[0].process.wait(60)
    finally:
        if database_url:
            asyncio.run(drop_database(database_url))
            asyncio.run(forget_prefix(redis_url, env["RT_REDIS_PREFIX"]))


async def forget_prefix(redis_url: str, prefix: str) -> None:
    """Delete the keys the run left under its own Redis prefix."""
    client = redis.from_url(redis_url)
    try:
        batch = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(batch), 500):
            await client.delete(*batch[i : i + 500])
    finally:
        await client.aclose()


async def make_keys(env: dict[str, str], names: list[str]) -> list[str]:
    """One account and one full pro_plus key per name, on the group's store, as `rt accounts create` and `rt keys
    create` make them (in one process: a CLI call per account would take minutes)."""
    settings = Settings.from_env({**env, "RT_LOG_LEVEL": "warning"})
    keys = []
    async with open_runtime(settings) as rt:
        for name in names:
            account = await rt.keys.create_account(name, None, actor="bench")
            issued = await rt.keys.create(account.id, "full", "pro_plus", name="bench", actor="bench")
            keys.append(issued.key)
    return keys


@dataclass
class Result:
    name: str
    store: str
    instances: int
    server_cpus: list[str]
    orders: list[dict[str, Any]]
    burst: dict[str, Any]
    kill: dict[str, Any]
    loadavg: float  # the machine's 1-minute load average when the run ended
    profile: list[str] = field(default_factory=list)


def measure(g: Group, args: argparse.Namespace) -> Result:
    names = ["single", "limit", "kill", *(f"many-{i}" for i in range(args.accounts))]
    keys = asyncio.run(make_keys(g.env, names))
    single, limit_key, kill_key, many = keys[0], keys[1], keys[2], keys[3:]

    async def work() -> tuple[list[Run], Burst, Kill]:
        await put_envelopes(g.ports, [single, kill_key, *many], ENVELOPE)
        runs = [await sequential(g.ports, single, args.warmup, args.sequential)]
        runs.append(await concurrent(f"1 account, {args.connections} connections", g, [single], args))
        runs.append(await concurrent(f"{args.accounts} accounts, {args.connections} connections", g, many, args))
        held = await burst(g.ports, limit_key, args.burst, args.limit)
        killed = await kill(g.ports, kill_key, args.kill_positions)
        return runs, held, killed

    runs, held, killed = run_loop(work())
    return Result(
        g.name,
        g.store,
        len(g.servers),
        sorted({cpus_of(s.process.pid) for s in g.servers}),
        [r.summary() for r in runs],
        {**asdict(held), "held": held.held},
        {**asdict(killed), "locked_everywhere": killed.locked_everywhere},
        round(os.getloadavg()[0], 2),
    )


# WebSocket fan-out


@dataclass
class FanoutResult:
    name: str
    processes: int
    instances_seen: int
    connected: int
    clients: int
    events_per_s: float
    ticks_per_s: float
    missed: int
    p50_ms: float
    p99_ms: float
    server_cpus: str
    note: str = ""


def workers_supported() -> bool:
    done = subprocess.run(
        [sys.executable, "-m", "rt", "serve", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    return "--workers" in done.stdout


def instances_behind(url: str, want: int, timeout: float = 30) -> int:
    """Distinct instance ids answering /v1/ready on fresh connections: SO_REUSEPORT spreads them over the workers."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            answer = httpx.get(url + "/v1/ready", timeout=2).json()
            seen.add(str(answer.get("instance") or answer.get("instance_id") or answer))
        time.sleep(0.05)
    return len(seen)


def fanout(workers: int, root: Path, redis_url: str, cpus: set[int], args: argparse.Namespace) -> FanoutResult:
    database_url = asyncio.run(fresh_database())
    env = {
        **shared_env(database_url, redis_url),
        "RT_PAPER_SYMBOLS": "BTC/USDT=65000",
        "RT_PAPER_TICK_MS": str(max(1, round(1000 / args.ws_rate))),
        "RT_PAPER_SEED": "1",
        "RT_WS_MAX_PER_KEY": "1000000",
        "RT_WS_QUEUE": "100000",
        "RT_WS_IDLE_S": "3600",
        "RT_BOOTSTRAP": "true",
    }
    name = f"rt serve --workers {workers}" if workers > 1 else "rt serve"
    program = ("-m", "rt", "serve", "--workers", str(workers)) if workers > 1 else ("-m", "rt", "serve")
    try:
        with contextlib.ExitStack() as stack:
            with pinned(cpus):
                server = stack.enter_context(run_server(root / f"ws{workers}", env, program=program))
            seen = instances_behind(server.url, workers)
            key = server.key or asyncio.run(make_keys({**env, "RT_DATA_DIR": str(server.data_dir)}, ["ws"]))[0]
            tokens = run_loop(_tokens(server.url, key, args.ws_clients))
            ws_base = server.url.replace("http://", "ws://") + "/v1/ws?token="
            load = Load(args.ws_clients, args.ws_rate, args.ws_seconds, 1, "raw", None)
            result = Fanout("rt", load)
            run_clients([ws_base + t for t in tokens], load, server.process.pid, result)
            server_cpus = cpus_of(server.process.pid)
    finally:
        asyncio.run(drop_database(database_url))
        asyncio.run(forget_prefix(redis_url, env["RT_REDIS_PREFIX"]))
    return FanoutResult(
        name,
        workers,
        seen,
        result.connected,
        args.ws_clients,
        round(result.per_s, 1),
        round(result.ticks_per_s, 1),
        result.gaps,
        round(result.pct_ms(0.5), 3),
        round(result.pct_ms(0.99), 3),
        server_cpus,
    )


# the report


def print_report(
    args: argparse.Namespace, results: list[Result], fanouts: list[FanoutResult], notes: list[str]
) -> None:
    print()
    print(
        f"rt scale-out: paper venue, no ticks, market orders of {QUANTITY} {SYMBOL}, {os.cpu_count()} CPUs; "
        f"servers pinned to CPU {args.server_cpus}, load generator (this process, raw asyncio HTTP/1.1 keep-alive"
        f"{', uvloop' if uvloop_in() else ''}) to CPU {args.client_cpus}; PostgreSQL and Redis unpinned"
    )
    for note in notes:
        print(f"  note: {note}")
    loads = ", ".join(f"{r.name} {r.loadavg:.1f}" for r in results)
    print(f"  1-minute load average at the end of each run: {loads}")
    print()
    print(
        f"{'orders':<14} {'load':<34} {'orders':>7} {'orders/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  statuses"
    )
    for r in results:
        for o in r.orders:
            print(
                f"{r.name:<14} {o['label']:<34} {o['orders']:>7} {o['orders_per_s']:>9.0f} {o['p50_ms']:>8.2f} "
                f"{o['p99_ms']:>8.2f} {o['max_ms']:>8.2f} {cpu_cells(o['cpu_percent'])} "
                f"{o['rt_cpu_ms_per_order'] if o['rt_cpu_ms_per_order'] is not None else '-':>11}  {o['statuses']}"
            )
    print()
    print(f"{'limits':<14} {'burst':>6} {'limit':>6} {'accepted':>9} {'open per instance':<20} held  statuses")
    for r in results:
        b = r.burst
        print(
            f"{r.name:<14} {b['attempts']:>6} {b['limit']:>6} {b['accepted']:>9} {b['open_per_instance']!s:<20} "
            f"{'yes ' if b['held'] else 'NO  '} {b['statuses']}"
        )
    print()
    print(
        f"{'kill':<14} {'opened':>7} {'closed':>7} {'failed':>7} {'server ms':>10} {'client ms':>10}  "
        "a market order after it, per instance"
    )
    for r in results:
        k = r.kill
        print(
            f"{r.name:<14} {k['opened']:>7} {k['closed']:>7} {k['failed']:>7} {k['server_ms']:>10.1f} "
            f"{k['client_ms']:>10.1f}  {k['refused']} "
            f"{'(423 everywhere)' if k['locked_everywhere'] else '(NOT LOCKED everywhere)'}"
        )
    print()
    if fanouts and fanouts[0].note:
        print(f"ws fan-out: {fanouts[0].note}")
    elif fanouts:
        print(
            f"ws fan-out: ticks:{SYMBOL} at {args.ws_rate:g}/s nominal, {args.ws_seconds:g} s window, raw client "
            "in one process, PostgreSQL + Redis; delay = receive time - event ts"
        )
        print(
            f"{'server':<22} {'instances':>9} {'connected':>11} {'events/s':>9} {'ticks/s':>8} {'missed':>7} "
            f"{'p50 ms':>8} {'p99 ms':>8}  CPUs"
        )
        for f in fanouts:
            print(
                f"{f.name:<22} {f.instances_seen:>9} {f.connected:>5}/{f.clients:<5} {f.events_per_s:>9.0f} "
                f"{f.ticks_per_s:>8.1f} {f.missed:>7} {f.p50_ms:>8.2f} {f.p99_ms:>8.2f}  {f.server_cpus}"
            )
    print()
    print("targets")
    for line in verdicts(args, results):
        print(f"  {line}")
    for r in results:
        if r.profile:
            print()
            print(f"where the time went: first instance of {r.name}, over the whole run (timed in the server)")
            print("\n".join(r.profile))


def cpu_cells(cpu: dict[str, float]) -> str:
    if not cpu:
        return f"{'-':>8} {'-':>4} {'-':>5} {'-':>4} {'-':>5}"
    return f"{cpu['rt']:>8.0f} {cpu['postgres']:>4.0f} {cpu['redis']:>5.0f} {cpu['loadgen']:>4.0f} {cpu['other']:>5.0f}"


def verdicts(args: argparse.Namespace, results: list[Result]) -> list[str]:
    out = []
    held = all(r.burst["held"] for r in results)
    out.append(f"{TARGETS['limits']}: {'met' if held else 'MISSED'} ({', '.join(_burst(r) for r in results)})")
    pg = [r for r in results if r.store == "postgresql"]
    if pg:
        seq = [(r.name, r.orders[0]["p99_ms"]) for r in pg]
        con = [(r.name, r.orders[1]["p99_ms"]) for r in pg]
        ok = all(p < 10 for _, p in seq)
        out.append(
            f"{TARGETS['p99']}: {'met' if ok else 'MISSED'} one at a time ("
            + ", ".join(f"{n} {p:.2f} ms" for n, p in seq)
            + f"); under {args.connections} connections on that account: "
            + ", ".join(f"{n} {p:.2f} ms" for n, p in con)
        )
        rates = [(r.instances, r.orders[2]["orders_per_s"]) for r in sorted(pg, key=lambda r: r.instances)]
        grows = len(rates) > 1 and all(b[1] > a[1] * 1.05 for a, b in itertools.pairwise(rates))
        verdict = ("met" if grows else "MISSED") if len(rates) > 1 else "not measured (one instance count)"
        out.append(
            f"{TARGETS['growth']}: {verdict} ("
            + ", ".join(f"{n} instance{'s' if n > 1 else ''} {v:.0f}/s" for n, v in rates)
            + ")"
        )
    kills = [(r.name, r.kill["server_ms"], r.kill["client_ms"]) for r in results]
    ok = all(c < 250 for _, _, c in kills)
    out.append(
        f"{TARGETS['kill'].format(n=args.kill_positions)}: {'met' if ok else 'MISSED'} (server / client: "
        + ", ".join(f"{n} {s:.0f} / {c:.0f} ms" for n, s, c in kills)
        + "); locked on every instance after: "
        + ("yes" if all(r.kill["locked_everywhere"] for r in results) else "NO")
    )
    return out


def _burst(r: Result) -> str:
    return f"{r.name} {r.burst['accepted']}/{r.burst['limit']}"


def uvloop_in() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: small counts, short windows")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--seconds", type=float, help="window of each concurrent run (5; --quick 1.5)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--sequential", type=int, help="orders sent one at a time (400; --quick 100)")
    parser.add_argument("--warmup", type=int, help="orders before those (100; --quick 30)")
    parser.add_argument("--accounts", type=int, help="accounts of the many-account run (100; --quick 20)")
    parser.add_argument("--burst", type=int, help="concurrent position opens against the limit (200; --quick 40)")
    parser.add_argument("--limit", type=int, default=5, help="max_concurrent_positions during the burst")
    parser.add_argument("--kill-positions", type=int, help="positions open at the kill (500; --quick 50)")
    parser.add_argument("--instances", default="1,2,3", help="PostgreSQL instance counts, one run each")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite single-process run")
    parser.add_argument("--ws-clients", type=int, help="WebSocket subscribers (500; --quick 50; 0 skips)")
    parser.add_argument("--ws-rate", type=float, default=100.0, help="ticks per second")
    parser.add_argument("--ws-seconds", type=float, help="fan-out window (8; --quick 2)")
    parser.add_argument("--server-cpus", default="", help="CPUs for the servers (default: all but the last)")
    parser.add_argument("--client-cpus", default="", help="CPUs for the load generator (default: the last)")
    parser.add_argument("--redis", default=os.environ.get("RT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--profile", type=Path, help="directory: time the first instance of each PostgreSQL run")
    args = parser.parse_args()
    quick = {"seconds": 1.5, "sequential": 100, "warmup": 30, "accounts": 20, "burst": 40, "kill_positions": 50}
    quick |= {"ws_clients": 50, "ws_seconds": 2.0}
    full = {"seconds": 5.0, "sequential": 400, "warmup": 100, "accounts": 100, "burst": 200, "kill_positions": 500}
    full |= {"ws_clients": 500, "ws_seconds": 8.0}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    available = sorted(os.sched_getaffinity(0))
    last = available[-1:]
    args.server_cpus = args.server_cpus or ",".join(str(c) for c in (available[:-1] or available))
    args.client_cpus = args.client_cpus or ",".join(str(c) for c in last)
    server_set, args.client_set = parse_cpus(args.server_cpus), parse_cpus(args.client_cpus)
    raise_nofile()
    os.sched_setaffinity(0, args.client_set)
    notes = []
    if server_set & args.client_set:
        notes.append("servers and load generator share CPU " + ",".join(map(str, sorted(server_set & args.client_set))))
    if len(server_set) == 1:
        notes.append(
            f"every instance shares CPU {args.server_cpus} with the others (PostgreSQL, Redis and the kernel's "
            "loopback work float over all CPUs): more instances add processes, not cores"
        )
    elif len(available) < 4:
        notes.append(f"{len(available)} CPUs in all: servers, load generator, PostgreSQL and Redis share them")
    if not asyncio.run(postgres_available()):
        raise SystemExit(f"PostgreSQL is not reachable at {POSTGRES_URL} (RT_TEST_POSTGRES_URL)")
    runs: list[tuple[str, int]] = [] if args.no_sqlite else [("sqlite", 1)]
    runs += [("postgresql", int(n)) for n in args.instances.split(",") if n.strip()]
    results: list[Result] = []
    fanouts: list[FanoutResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        for store, size in runs:
            here = root / f"{store}{size}"
            out = args.profile.resolve() / f"{store}{size}.json" if args.profile and store == "postgresql" else None
            log(args, f"{store} x{size}: starting")
            with group(store, size, here, args.redis, server_set, out) as g:
                result = measure(g, args)
            if out is not None and out.exists():
                result.profile = timing_summary(out)
            results.append(result)
            log(args, f"{store} x{size}: done")
        if args.ws_clients:
            if not workers_supported():
                fanouts.append(FanoutResult("", 0, 0, 0, 0, 0, 0, 0, 0, 0, "", "not run: rt serve --workers missing"))
            else:
                for workers in (1, 2):
                    log(args, f"ws fan-out, workers {workers}")
                    fanouts.append(fanout(workers, root, args.redis, server_set, args))
    if args.json:
        payload = {
            "cpus": os.cpu_count(),
            "server_cpus": args.server_cpus,
            "client_cpus": args.client_cpus,
            "notes": notes,
            "targets": verdicts(args, results),
            "runs": [asdict(r) for r in results],
            "ws_fanout": [asdict(f) for f in fanouts],
        }
        print(json.dumps(payload, indent=2))
    else:
        print_report(args, results, fanouts, notes)


def log(args: argparse.Namespace, line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr if args.json else sys.stdout, flush=True)


if __name__ == "__main__":
    main()
