"""Per-tick work with many accounts: the server's CPU per tick with 10,000 idle accounts beside the same 10,000
accounts holding one open position each on the ticking symbol.

    .venv/bin/python bench/tick_work.py [--accounts 10000] [--tick-ms 10] [--seconds 15] [--warmup 5]
        [--runs 3] [--source DIR] [--json FILE]

Each run seeds a fresh data dir through the store API in this process (accounts and books; in the second run one
long BTC/USDT position per account, with a stop loss and a take profit far from the price so the triggers are armed
and never crossed), then starts the real `rt serve` on it pinned to core 0 (`taskset -c 0`) with one paper symbol
ticking every `--tick-ms` (10: 100 ticks/s). After `--warmup` seconds it reads the server's user+system CPU from
/proc/<pid>/stat over a `--seconds` window and divides it by the ticks the engine heard in it (counted in the server
by a wrapper around TickWork.on_tick). The feed skips steps rather than queueing them when the process falls behind,
so `ticks/s` says how far below the nominal rate a run fell; a run whose server used >= 90% of its core is marked
saturated.

`--source DIR` serves another tree of rt (e.g. `git archive <commit> | tar -x -C DIR`) for a before/after.
The machine's two cores are shared with whatever else runs on it: figures move from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rt.engine import ledger
from rt.records.ids import new_id
from rt.records.trading import Book, Position, TradeBatch
from rt.store.sqlite import SQLiteStore
from tests.e2e.server import run_server

CLK_TCK = os.sysconf("SC_CLK_TCK")
# `rt serve`, with the ticks the engine heard counted (TickWork.on_tick wrapped) and written to a file on SIGUSR1, so
# a server that fell behind is measured by the ticks it did, not the nominal rate.
SERVE_COUNTING = """
import os, signal, sys
if os.environ.get("BENCH_SOURCE"):
    sys.path.insert(0, os.environ["BENCH_SOURCE"])
from rt.engine import market
heard = [0]
on_tick = market.TickWork.on_tick
def counted(self, venue, ticker):
    heard[0] += 1
    on_tick(self, venue, ticker)
market.TickWork.on_tick = counted
def write(*_):
    path = os.environ["BENCH_TICKS"]
    with open(path + ".new", "w") as f:
        f.write(str(heard[0]))
    os.replace(path + ".new", path)
signal.signal(signal.SIGUSR1, write)
from rt.cli import main
main(args=["serve"], prog_name="rt")
"""
SYMBOL, PRICE = "BTC/USDT", Decimal("65000")
SATURATED = 0.9
CHUNK = 1000


@dataclass
class Run:
    name: str
    accounts: int
    positions: int
    seed_s: float
    start_s: float
    cpu_s: float
    loop_cpu_s: float  # of that, the main thread's: the event loop (ticks, the engine, the hub)
    window_s: float
    ticks: int

    @property
    def per_tick_us(self) -> float:
        return self.cpu_s / self.ticks * 1e6

    @property
    def loop_per_tick_us(self) -> float:
        return self.loop_cpu_s / self.ticks * 1e6

    @property
    def rate(self) -> float:
        return self.ticks / self.window_s

    @property
    def core(self) -> float:
        return self.cpu_s / self.window_s


def cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of the process (or of one of its threads)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


async def seed(db: Path, accounts: int, positions: bool) -> None:
    """Accounts with their books (as the engine makes a new one), and one open position each if asked."""
    store = await SQLiteStore.open(str(db))
    try:
        made: list[Position] = []
        for i in range(accounts):
            account = await store.create_account(f"trader-{i:05d}")
            book = Book(account.id, Decimal("100000"))
            ledger.roll_day(book)
            await store.create_book(book)
            if positions:
                made.append(
                    Position(
                        id=new_id("pos"),
                        account_id=account.id,
                        exchange="paper",
                        symbol=SYMBOL,
                        side="long",
                        quantity=Decimal("0.01"),
                        entry_price=PRICE,
                        status="open",
                        current_price=PRICE,
                        stop_loss=PRICE / 2,
                        take_profit=PRICE * 2,
                        simulated=True,
                    )
                )
        for start in range(0, len(made), CHUNK):
            await store.save(TradeBatch(positions=made[start : start + CHUNK]))
    finally:
        await store.close()


def env(args: argparse.Namespace) -> dict[str, str]:
    out = {
        "RT_LOG_LEVEL": "warning",
        "RT_PAPER_SYMBOLS": f"{SYMBOL}={PRICE}",
        "RT_PAPER_TICK_MS": str(args.tick_ms),
        "RT_PAPER_SEED": "1",
    }
    if args.source:
        out["BENCH_SOURCE"] = str(Path(args.source).resolve())
    return out


def ticks_heard(pid: int, path: Path) -> int:
    """Ask the server for its count of ticks heard."""
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 5
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("rt serve did not write its tick count")
        time.sleep(0.001)
    return int(path.read_text())


def one_run(args: argparse.Namespace, name: str, positions: bool) -> Run:
    with tempfile.TemporaryDirectory(prefix="rt-ticks-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir(mode=0o700)
        began = time.perf_counter()
        asyncio.run(seed(data / "rt.db", args.accounts, positions))
        seeded = time.perf_counter() - began
        began = time.perf_counter()
        counter = Path(tmp) / "ticks"
        counting = {**env(args), "BENCH_TICKS": str(counter)}
        program = ("-c", SERVE_COUNTING)
        with run_server(data, counting, program=program, argv_prefix=("taskset", "-c", "0")) as server:
            started = time.perf_counter() - began
            time.sleep(args.warmup)
            pid = server.process.pid
            cpu0, loop0, ticks0, t0 = cpu_s(pid), cpu_s(pid, pid), ticks_heard(pid, counter), time.monotonic()
            time.sleep(args.seconds)
            cpu1, loop1, ticks1, t1 = cpu_s(pid), cpu_s(pid, pid), ticks_heard(pid, counter), time.monotonic()
            if server.process.poll() is not None:
                raise RuntimeError(f"rt serve ended during the window:\n{server.logs()[-3000:]}")
        window = t1 - t0
        used, loop = cpu1 - cpu0, loop1 - loop0
        count = args.accounts if positions else 0
        return Run(name, args.accounts, count, seeded, started, used, loop, window, ticks1 - ticks0)


def table(runs: list[Run]) -> str:
    head = f"{'run':<13} {'accounts':>8} {'positions':>9} {'seed s':>7} {'start s':>7} {'cpu s':>6} "
    head += f"{'core %':>6} {'ticks':>6} {'ticks/s':>7} {'cpu/tick µs':>11} {'loop/tick µs':>12}"
    lines = [head, "-" * len(head)]
    for r in runs:
        mark = "  saturated" if r.core >= SATURATED else ""
        lines.append(
            f"{r.name:<13} {r.accounts:>8} {r.positions:>9} {r.seed_s:>7.1f} {r.start_s:>7.1f} {r.cpu_s:>6.2f} "
            f"{r.core * 100:>6.1f} {r.ticks:>6} {r.rate:>7.1f} {r.per_tick_us:>11.1f} {r.loop_per_tick_us:>12.1f}{mark}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--tick-ms", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--runs", type=int, default=3, help="idle and positions runs, interleaved")
    parser.add_argument("--source", help="serve this tree of rt instead of the installed one")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    runs: list[Run] = []
    ratios: list[tuple[float, float]] = []
    for n in range(1, args.runs + 1):
        idle, busy = one_run(args, f"idle #{n}", positions=False), one_run(args, f"positions #{n}", positions=True)
        runs += [idle, busy]
        ratios.append((busy.per_tick_us / idle.per_tick_us, busy.loop_per_tick_us / idle.loop_per_tick_us))
    print(f"rt serve pinned to core 0, {1000 / args.tick_ms:.0f} ticks/s of {SYMBOL}, window {args.seconds:.0f} s")
    if args.source:
        print(f"served from {args.source}")
    print(table(runs))
    for n, (ratio, loop) in enumerate(ratios, 1):
        print(f"run #{n}: cpu per tick, positions / idle {ratio:.2f}x (target: within 2x); event loop {loop:.2f}x")
    process, loop = (statistics.median(r[i] for r in ratios) for i in (0, 1))
    print(f"median: {process:.2f}x, event-loop thread {loop:.2f}x")
    print("(both include SQLite writing every open position's mark each second, on the event loop's thread)")
    if args.json:
        figures = [{**asdict(r), "per_tick_us": r.per_tick_us, "loop_per_tick_us": r.loop_per_tick_us} for r in runs]
        body = {"runs": figures, "ratios": [{"process": r, "event_loop": e} for r, e in ratios]}
        Path(args.json).write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
