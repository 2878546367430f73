"""WebSocket fan-out at the limit: rt beside a bare `websockets` broadcast server (bench/bare_broadcast.py), same
harness, same load, in one run.

    .venv/bin/python bench/ws_fanout.py [--quick] [--clients 1000] [--rates 50,100,200,300,400] [--runs 3]
        [--seconds 15] [--idle 5000] [--stuck 10] [--stuck-seconds 30] [--procs 2]
        [--client picows|websockets|raw] [--skip-bare] [--phases sweep,load,idle,stuck,orders] [--json FILE]

Each run starts a fresh server pinned to core 0 (`taskset -c 0`): `rt serve` with one paper symbol ticking every
1000 / rate ms, or the bare server ticking at the same rate. The load generator (this process and `--procs` client
processes, each its own event loop) is pinned to core 1. rt's clients take one token each from POST /v1/ws/token
and connect with ?token=; every client subscribes to ticks:BTC/USDT and counts, over the window, the events it
received and their latency (receive time - the event's `ts`, both epoch µs on this machine). A server that cannot
keep up offers fewer ticks/s instead of queueing them (both tick, then sleep 1 / rate), so `ticks/s` shows how far
it fell behind. Server CPU is the server process's user+system time over the window, in % of one core.

Phases:
  sweep   deliveries/s with `--clients` clients at each of `--rates`, `--runs` times, rt and bare interleaved. Per
          run, each server's highest deliveries/s among the rates where every client connected, none was closed
          and p99 < 50 ms; the ratio rt/bare per run, its mean and min. The same for the highest deliveries/s at
          any p99 (saturation). rt runs with RT_WS_QUEUE=100000 here, so falling behind shows as latency rather
          than as 4008 closes. A row whose client processes used >= 90% of their core is marked loadgen-bound.
  load    `--clients` x 100 ticks/s with the product's default send queue: deliveries/s, p50/p99, server CPU.
  idle    `--idle` connections that do not subscribe: the server's VmRSS growth per connection.
  stuck   `--stuck` clients that subscribe, then stop reading when the window opens (their transport's reading
          paused), beside `--clients` healthy ones at 100 ticks/s. For each: the TCP state its socket reached
          while it did not read, the bytes the kernel held for it, and what came once it read again after
          `--stuck-seconds`: a 4008 close frame, another close, a drop without a close frame, or nothing. The
          healthy clients' p99 beside the load phase's; rt's rt_ws_slow_consumer_closes before and after.
  orders  with `--clients` receiving 100 ticks/s: order.place -> result over one socket for `--seconds` back to
          back (a closed loop: about 900 orders/s here, which takes half the server's core from the fan-out), then
          for `--seconds` at a fixed 200/s (one every 5 ms), then POST /v1/orders every 50 ms for `--seconds` (market
          orders on paper; each timed from its write to its whole answer), then one client
          writes 1,100 pings in one burst and counts its pongs and any close. The timing client (this process)
          runs at real-time priority while it times the orders, where permitted (root or CAP_SYS_NICE): on the
          core it shares with the client processes, its own wake-ups would otherwise lengthen the tail.

The machine's two cores are shared with whatever else runs on it: figures move from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import fanout_orders
from bench.fanout_clients import CHANNEL, Plan, client_process, now_us, pin, raise_nofile, run_loop
from bench.fanout_report import (
    FANOUT_HEAD,
    STUCK_HEAD,
    Fanout,
    Load,
    SweepRun,
    behind_at_close,
    fanout_notes,
    fanout_row,
    idle_row,
    order_line,
    stuck_rows,
    sweep_lines,
    sweep_summary,
)
from bench.picows_client import PicowsClient, ping_burst
from tests.e2e.server import free_port, run_server

BARE = Path(__file__).resolve().parent / "bare_broadcast.py"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU, LOAD_CPU = (0, 1) if (os.cpu_count() or 1) >= 2 else (None, None)
SLOW_CONSUMER = "rt_ws_slow_consumer_closes"
QUEUE_DEPTH_MAX = "rt_ws_queue_depth_max"
PINGS = 1100
PHASES = ("sweep", "load", "idle", "stuck", "orders")
WS_ORDER_EVERY_S = 0.005  # the fixed-rate order.place run: 200 orders/s on one socket


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


def tick_ms(rate: float) -> str:
    """Both servers tick every this many ms (RT_PAPER_TICK_MS is whole ms: 300/s is every 3 ms, 333/s)."""
    return str(max(1, round(1000 / rate)))


def server_prefix() -> tuple[str, ...]:
    return ("taskset", "-c", str(SERVER_CPU)) if SERVER_CPU is not None else ()


# the servers


@dataclass
class Target:
    """A running server as the harness reaches it: one URL per client connection, spares for the harness's own."""

    name: str
    pid: int
    urls: list[str]
    spare: list[str]
    base: str = ""
    key: str = ""
    metrics: str = ""


Extra = Callable[[Target, int, int, Fanout], None]  # runs in this process over the window (start, end µs)


def rt_env(load: Load, metrics_port: int) -> dict[str, str]:
    env = {
        "RT_LOG_LEVEL": "info",  # the stuck phase reads its slow-consumer closes
        "RT_PAPER_SYMBOLS": "BTC/USDT=65000",
        "RT_PAPER_TICK_MS": tick_ms(load.rate),
        "RT_PAPER_SEED": "1",
        "RT_TIER_LIMITS": "pro_plus=10000000/1000000",
        "RT_WS_MAX_PER_KEY": "1000000",
        "RT_WS_IDLE_S": "3600",
        "RT_METRICS_PORT": str(metrics_port),
    }
    if load.queue is not None:
        env["RT_WS_QUEUE"] = str(load.queue)
    return env


@contextlib.contextmanager
def rt_target(load: Load, spare: int, log: list[str]) -> Iterator[Target]:
    """`rt serve` on a fresh data dir, pinned to the server core, with a token per client; `log` gets its stderr."""
    metrics_port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        with run_server(Path(tmp) / "data", rt_env(load, metrics_port), argv_prefix=server_prefix()) as server:
            assert server.key, "no bootstrap key"
            tokens = run_loop(_tokens(server.url, server.key, load.clients + load.stuck + spare))
            ws = server.url.replace("http://", "ws://") + "/v1/ws?token="
            urls = [ws + t for t in tokens]
            yield Target(
                "rt",
                server.process.pid,
                urls[: -spare or None],
                urls[len(urls) - spare :],
                server.url,
                server.key,
                f"http://127.0.0.1:{metrics_port}/metrics",
            )
        log.extend(server.logs().splitlines())


@contextlib.contextmanager
def bare_target(load: Load, spare: int) -> Iterator[Target]:
    port = free_port()
    argv = [*server_prefix(), sys.executable, str(BARE), "--port", str(port), "--tick-ms", tick_ms(load.rate)]
    argv += ["--compression", load.compression or "none"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("listening"):
            raise RuntimeError(f"bare server did not start: {line!r}")
        url = f"ws://127.0.0.1:{port}/"
        yield Target("bare", process.pid, [url] * (load.clients + load.stuck), [url] * spare)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


async def _warm_up(url: str) -> None:
    """One subscribed connection first, so the server's code paths are loaded before the RSS baseline."""
    client = PicowsClient(lambda payload, now: None, lambda code: None)
    await client.open(url, b'{"op":"subscribe","channel":"' + CHANNEL.encode() + b'","id":1}')
    await asyncio.sleep(0.5)
    client.abort()
    await asyncio.sleep(0.5)


def fanout(server: str, load: Load, extra: Extra | None = None, spare: int = 0, profile: Path | None = None) -> Fanout:
    """One fresh server under `load`; `extra` runs in this process over the window."""
    result = Fanout(server, load)
    spare += 1  # the warm-up connection
    targets = rt_target(load, spare, result.server_log) if server == "rt" else bare_target(load, spare)
    with targets as target:
        run_loop(_warm_up(target.spare.pop()))
        result.rss_before_kb = rss_kb(target.pid)
        run_clients(target, load, result, extra, profile)
    return result


# the window


def run_clients(target: Target, load: Load, result: Fanout, extra: Extra | None, profile: Path | None) -> None:
    """Connect every URL of `target` from `load.procs` processes, measure one window, fill `result`.

    The stuck clients all live in the first process. With `profile`, py-spy samples the server over the window.
    """
    ctx = mp.get_context("spawn")
    stuck, healthy = target.urls[: load.stuck], target.urls[load.stuck :]
    chunks = [healthy[i :: load.procs] for i in range(load.procs)]
    plans = [
        Plan(
            (stuck if i == 0 else []) + chunk,
            load.kind,
            load.compression,
            not load.idle,
            LOAD_CPU,
            len(stuck) if i == 0 else 0,
            load.stuck_s,
            load.drain_s,
            load.sample,
        )
        for i, chunk in enumerate(chunks)
        if chunk or (i == 0 and stuck)
    ]
    pipes: list[Connection] = []
    children: list[Any] = []
    spy: subprocess.Popen[bytes] | None = None
    try:
        for plan in plans:
            parent_end, child_end = ctx.Pipe()
            child = ctx.Process(target=client_process, args=(child_end, plan), daemon=True)
            child.start()
            pipes.append(parent_end)
            children.append(child)
        for pipe in pipes:
            ready = _recv(pipe, 600)
            result.connected += ready["connected"]
            result.errors.update(ready["errors"])
            result.extensions = sorted(set(result.extensions) | set(ready["extensions"]))
        time.sleep(3.0 if load.idle else 1.0)
        result.rss_after_kb = rss_kb(target.pid)
        start = now_us() + 1_000_000
        end = start + int(load.seconds * 1e6)
        for pipe in pipes:
            pipe.send((start, end))
        time.sleep(max(0.0, (start - now_us()) / 1e6))
        cpu0, (busy0, softirq0) = cpu_s(target.pid), machine_cpu()
        spy = _py_spy(target.pid, load.seconds, profile) if profile else None
        if extra is not None:
            extra(target, start, end, result)
        time.sleep(max(0.0, (end - now_us()) / 1e6))
        result.server_cpu_s = cpu_s(target.pid) - cpu0
        result.rss_end_kb = rss_kb(target.pid)
        busy1, softirq1 = machine_cpu()
        result.machine_cpu_s, result.softirq_s = busy1 - busy0, softirq1 - softirq0
        result.seconds = load.seconds
        first, last = 1 << 62, 0
        latencies = array("q")
        for pipe in pipes:
            done = _recv(pipe, 120 + load.stuck_s + load.drain_s)
            result.events += done["events"]
            result.frames += done["frames"]
            result.gaps += done["gaps"]
            result.measured_events += done["measured_events"]
            result.measured_streams += done["measured_streams"]
            result.client_cpu_s += done["cpu_s"]
            result.client_sys_s += done["cpu_sys_s"]
            result.stuck.extend(done["stuck"])
            for code, n in done["closes"].items():
                result.closes[code] = result.closes.get(code, 0) + n
            first, last = min(first, done["seq_first"]), max(last, done["seq_last"])
            latencies.frombytes(done["latencies"])
        result.ticks = last - first + 1 if last else 0
        result.latencies_us = sorted(latencies)
        if spy is not None:
            spy.wait(60)
        for pipe in pipes:
            pipe.send("bye")
        for child in children:
            child.join(30)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        for child in children:
            if child.is_alive():
                child.kill()
                child.join(10)


def _recv(pipe: Connection, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise RuntimeError(f"a client process did not answer within {timeout:.0f} s")
    return pipe.recv()


def _py_spy(pid: int, seconds: float, path: Path) -> subprocess.Popen[bytes]:
    py_spy = Path(sys.executable).with_name("py-spy")
    argv = [str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--duration", str(max(1, int(seconds)))]
    argv += ["--format", "raw", "--function", "--output", str(path), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# what runs beside the fan-out


def read_metrics(url: str) -> dict[str, float]:
    """The slow-consumer counter and the fullest send queue from rt's scrape port; {} when it does not answer."""
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return {}
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        name = name.removesuffix("_total")  # a counter's sample
        if name in (SLOW_CONSUMER, QUEUE_DEPTH_MAX):
            out[name] = float(value)
    return out


def watch_slow_consumers(target: Target, start: int, end: int, result: Fanout) -> None:
    """rt's slow-consumer counter and fullest send queue every 250 ms over the window, kept when either changed."""
    if not target.metrics:
        return
    last: dict[str, float] = {}
    while True:
        sample = read_metrics(target.metrics)
        at = round((now_us() - start) / 1e6, 2)
        if sample and sample != last:
            result.slow_consumer.append((at, sample.get(SLOW_CONSUMER, -1), sample.get(QUEUE_DEPTH_MAX, -1)))
            last = sample
        if now_us() >= end:
            break
        time.sleep(0.25)


def orders_and_pings(seconds: float) -> Extra:
    def run(target: Target, start: int, end: int, result: Fanout) -> None:
        half = int(seconds * 1e6)
        run_loop(fanout_orders.prepare(target.base, target.key))
        with fanout_orders.ahead_of_the_load() as priority:
            ws = run_loop(fanout_orders.ws_orders(target.spare[0], start + half))
            paced = run_loop(fanout_orders.ws_orders(target.spare[1], start + 2 * half, every_s=WS_ORDER_EVERY_S))
            rest = run_loop(fanout_orders.rest_orders(target.base, target.key, start + 3 * half))
        for o in (ws, paced, rest):
            o.priority = priority
        result.orders = [ws.summary(), paced.summary(), rest.summary()]
        result.ping = run_loop(ping_burst(target.spare[2], PINGS, max(1.0, (end - now_us()) / 1e6 - 1)))

    return run


# the run


@dataclass
class Report:
    args: dict[str, Any]
    sweep: list[SweepRun] = field(default_factory=list)
    load: list[Fanout] = field(default_factory=list)
    idle: list[Fanout] = field(default_factory=list)
    stuck: list[Fanout] = field(default_factory=list)
    orders: Fanout | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "args": self.args,
            "cpus": os.cpu_count(),
            "sweep": [r.to_json() for run in self.sweep for r in run.rows],
            "sweep_summary": sweep_summary(self.sweep),
            "load": [r.to_json() for r in self.load],
            "idle": [r.to_json() for r in self.idle],
            "stuck": [r.to_json() for r in self.stuck],
            "orders": self.orders.to_json() if self.orders else None,
        }


def show(r: Fanout) -> None:
    print(fanout_row(r), flush=True)
    for line in fanout_notes(r):
        print(line, flush=True)


def run_phases(args: argparse.Namespace, report: Report) -> None:
    servers = ["rt"] if args.skip_bare else ["rt", "bare"]
    phases = set(args.phases.split(","))
    base = Load(args.clients, 100.0, args.seconds, args.procs, args.client, args.compression, sample=args.sample)
    if "sweep" in phases:
        rates = [float(r) for r in args.rates.split(",") if r.strip()]
        print(f"\n1. sweep: {args.clients} clients at {args.rates} ticks/s, {args.runs} run(s), {args.seconds:g} s")
        print(FANOUT_HEAD, flush=True)
        for i in range(1, args.runs + 1):
            run = SweepRun(i, [])
            report.sweep.append(run)
            for rate in rates:
                for server in servers:
                    run.rows.append(fanout(server, replace(base, rate=rate, queue=100_000)))
                    show(run.rows[-1])
        print("\n".join(sweep_lines(report.sweep)))
    if "load" in phases:
        print(f"\n2. {args.clients} clients x 100 ticks/s, product default send queue (target rt p99 < 20 ms)")
        print(FANOUT_HEAD, flush=True)
        for server in servers:
            profile = args.profile / f"{server}-load.txt" if args.profile else None
            report.load.append(fanout(server, base, profile=profile))
            show(report.load[-1])
    if "idle" in phases and args.idle:
        print(f"\n3. {args.idle} idle connections (no subscription): server VmRSS before and 3 s after (rt <= 16 KB)")
        for server in servers:
            idle = Load(args.idle, 100.0, 1.0, args.procs, args.client, None, idle=True)
            report.idle.append(fanout(server, idle))
            print(idle_row(report.idle[-1]), flush=True)
    if "stuck" in phases and args.stuck:
        window = max(args.seconds, args.stuck_seconds + args.drain_seconds + 1)
        stuck = Load(
            args.clients, 100.0, window, args.procs, args.client, args.compression, None, False, args.stuck,
            args.stuck_seconds, args.drain_seconds, args.sample,
        )  # fmt: skip
        print(f"\n4. {args.stuck} clients that stop reading beside {args.clients} healthy ones, 100 ticks/s")
        print(FANOUT_HEAD, flush=True)
        for server in servers:
            report.stuck.append(fanout(server, stuck, watch_slow_consumers))
            show(report.stuck[-1])
    if "orders" in phases:
        print(f"\n5/6. orders and a ping burst while {args.clients} clients receive 100 ticks/s (rt)")
        print(FANOUT_HEAD, flush=True)
        orders = replace(base, seconds=3 * args.seconds + 4)
        report.orders = fanout("rt", orders, orders_and_pings(args.seconds), spare=3)
        show(report.orders)


def code_state() -> str:
    """The commit rt runs from, and how many of its files differ from it (the bench runs the working tree)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "rt"], cwd=root, capture_output=True, text=True)
    except OSError:
        return "unknown"
    changed = len(dirty.stdout.splitlines())
    return f"{head.stdout.strip()}" + (f" with {changed} uncommitted change(s) under rt/" if changed else "")


def print_report(report: Report) -> None:
    print("\n" + "=" * 100)
    a = report.args
    print(
        f"ws fan-out on {CHANNEL}: server on core {SERVER_CPU}, load generator on core {LOAD_CPU} ({a['procs']} "
        f"{a['client']} client processes), {os.cpu_count()} CPUs, shared with whatever else runs: figures are noisy"
    )
    print(f"rt code: {a.get('code', '?')}")
    print(
        f"latency = client receive time - event ts, of every {a['sample']}th client; missed = seq gaps in the window; "
        "CPU in % of one core (loadgen: all client processes; near 100% the load generator limits the figures)"
    )
    if report.sweep:
        print(f"\n1. deliveries/s at p99 < 50 ms (every client connected, none closed), {a['clients']} clients")
        print(FANOUT_HEAD)
        for run in report.sweep:
            for r in run.rows:
                print(fanout_row(r))
        print("\n".join(sweep_lines(report.sweep)))
    if report.load:
        print(f"\n2. {a['clients']} clients x 100 ticks/s (target rt p99 < 20 ms)")
        print(FANOUT_HEAD)
        for r in report.load:
            print(fanout_row(r))
    if report.idle:
        print("\n3. idle connections: server VmRSS before, and 3 s after they connected (target rt <= 16 KB)")
        for r in report.idle:
            print(idle_row(r))
    if report.stuck:
        print(f"\n4. stuck clients: they stop reading at 0 ms, read again at {a['stuck_seconds'] * 1000:.0f} ms")
        print(FANOUT_HEAD)
        for r in report.stuck:
            print(fanout_row(r))
        for r in report.stuck:
            base = next((b for b in report.load if b.server == r.server), None)
            if base is not None:
                print(
                    f"  {r.server}: healthy p99 {r.pct_ms(0.99):.2f} ms with stuck clients vs {base.pct_ms(0.99):.2f} "
                    f"ms without (phase 2); p50 {r.pct_ms(0.5):.2f} vs {base.pct_ms(0.5):.2f} ms"
                )
            print(
                f"  {r.server}: server VmRSS {r.rss_after_kb / 1024:.1f} MB when the window opened, "
                f"{r.rss_end_kb / 1024:.1f} MB when it closed"
            )
            if r.slow_consumer:
                first, last = r.slow_consumer[0], r.slow_consumer[-1]
                print(
                    f"  {r.server}: {SLOW_CONSUMER} {first[1]:g} before, {last[1]:g} after; fullest send queue "
                    f"{max(q for _, _, q in r.slow_consumer):g} messages at most"
                )
                previous = first[1]
                for t, closes, depth in r.slow_consumer:
                    if closes != previous:
                        print(f"    {closes:g} at {t:.2f} s after they stopped reading (fullest queue {depth:g})")
                        previous = closes
            elif r.server == "rt":
                print(f"  {r.server}: {SLOW_CONSUMER} could not be read")
            behind = behind_at_close(r.server_log)
            if r.server == "rt":
                print(
                    f"  {r.server}: {len(behind)} closed with 4008, each after its send buffer had been over the "
                    f"limit for {', '.join(f'{b:.2f}' for b in sorted(behind)) or '-'} s (target <= 5 s)"
                )
        print(STUCK_HEAD)
        for r in report.stuck:
            for line in stuck_rows(r):
                print(line)
        print("  ms are after the client stopped reading; tcp: the socket's state while it did not read")
    if report.orders is not None:
        r = report.orders
        print(f"\n5. orders while {r.connected} clients receive 100 ticks/s (rt)")
        print(FANOUT_HEAD)
        print(fanout_row(r))
        for o, target in zip(r.orders, (3.0, 3.0, 10.0), strict=False):
            print(order_line(o, target))
        if r.orders:
            print(f"  the timing client ran at {r.orders[0].get('priority') or 'normal priority'}")
        if r.ping:
            p = r.ping
            print(
                f"\n6. ping burst: {p['sent']} pings written at once, {p['pongs']} pongs received in "
                f"{p['seconds']:.2f} s, close: {p['close'] or 'none'} (target: all pongs, no 4008)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts and short windows: a smoke test")
    parser.add_argument("--clients", type=int, default=1000, help="healthy clients per fan-out run")
    parser.add_argument("--rates", default="50,100,200,300,400", help="ticks/s the sweep runs at, comma-separated")
    parser.add_argument("--runs", type=int, default=3, help="passes over the sweep's rates")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per run")
    parser.add_argument("--idle", type=int, default=5000, help="idle connections for the RSS run (0: skip)")
    parser.add_argument("--stuck", type=int, default=10, help="clients that stop reading (0: skip)")
    parser.add_argument("--stuck-seconds", type=float, default=30.0, help="how long they do not read")
    parser.add_argument("--drain-seconds", type=float, default=5.0, help="how long they read again before the end")
    parser.add_argument("--procs", type=int, default=2, help="client processes (all on the load core)")
    parser.add_argument(
        "--client",
        choices=("picows", "websockets", "raw"),
        default="picows",
        help="picows (C frame parser), the websockets asyncio client, or a minimal pure-Python frame parser",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=10,
        help="every N-th client parses its events for latency and missed ticks, the others only count them",
    )
    parser.add_argument("--compression", choices=("none", "deflate"), default="none", help="websockets client only")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"which of {','.join(PHASES)} to run")
    parser.add_argument("--skip-bare", action="store_true", help="do not measure the bare websockets server")
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--profile", type=Path, help="directory: py-spy samples each server in the load phase")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.rates, args.runs, args.seconds = min(args.clients, 100), "100,300", 1, 2.0
        args.idle, args.stuck, args.stuck_seconds, args.drain_seconds = min(args.idle, 500), 3, 2.0, 1.0
    if args.compression == "deflate" and args.client != "websockets":
        parser.error("--compression deflate needs --client websockets")
    args.compression = None if args.compression == "none" else args.compression
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    pin(LOAD_CPU)
    raise_nofile()
    # Ctrl-C, and SIGTERM too, unwind through every context that stops a server or a client process by its pid.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    report = Report({k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()})
    report.args["code"] = code_state()
    try:
        run_phases(args, report)
    except KeyboardInterrupt:
        print("\ninterrupted: every server and client process is stopped; the figures so far follow", file=sys.stderr)
    print_report(report)
    if args.json:
        args.json.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        print(f"\nfigures written to {args.json}")


if __name__ == "__main__":
    main()
