"""What the fan-out benchmark measured, per run, and the tables and JSON it prints."""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

P99_LIMIT_MS = 50.0
LOADGEN_BOUND = 0.9


@dataclass(frozen=True)
class Load:
    clients: int
    rate: float
    seconds: float
    procs: int
    kind: str  # the client library: "picows", "websockets" or "raw"
    compression: str | None
    queue: int | None = None  # rt's RT_WS_QUEUE; None: the product's default
    idle: bool = False
    stuck: int = 0
    stuck_s: float = 8.0
    drain_s: float = 5.0
    sample: int = 1


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
    measured_events: int = 0
    measured_streams: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    extensions: list[str] = field(default_factory=list)
    latencies_us: list[int] = field(default_factory=list)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    client_sys_s: float = 0.0
    machine_cpu_s: float = 0.0
    softirq_s: float = 0.0
    server_log: list[str] = field(default_factory=list)
    rss_before_kb: int = 0
    rss_after_kb: int = 0
    rss_end_kb: int = 0  # when the window closed
    stuck: list[dict[str, Any]] = field(default_factory=list)
    # rt's metrics while stuck clients did not read: (s since the window opened, slow-consumer closes, fullest queue)
    slow_consumer: list[tuple[float, float, float]] = field(default_factory=list)
    orders: list[dict[str, Any]] = field(default_factory=list)
    ping: dict[str, Any] | None = None

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

    @property
    def counted_vs_measured(self) -> float:
        """Events per counted connection over events per measured one: 1 when both ways of counting agree."""
        counted_streams = self.connected - self.measured_streams
        if not counted_streams or not self.measured_events:
            return 1.0
        counted = (self.events - self.measured_events) / counted_streams
        return counted / (self.measured_events / self.measured_streams)

    @property
    def loadgen_bound(self) -> bool:
        """The client processes used 90% of their core or more: the server may have had more to give."""
        return bool(self.seconds) and self.client_cpu_s / self.seconds >= LOADGEN_BOUND

    @property
    def healthy(self) -> bool:
        """Every client connected, none closed and p99 under the limit: this run's deliveries/s count."""
        return self.connected == self.load.clients and not self.closes and self.pct_ms(0.99) < P99_LIMIT_MS

    def to_json(self) -> dict[str, Any]:
        pct = {f"p{label}_ms": _num(self.pct_ms(q)) for label, q in (("50", 0.5), ("99", 0.99), ("max", 1.0))}
        seconds = self.seconds or math.nan
        return {
            "server": self.server,
            "load": asdict(self.load),
            "connected": self.connected,
            "deliveries_per_s": round(self.per_s),
            "ticks_per_s": round(self.ticks_per_s, 1),
            "events_per_frame": round(self.events / max(self.frames, 1), 2),
            "missed": self.gaps,
            "counted_vs_measured": round(self.counted_vs_measured, 3),
            **pct,
            "server_cpu_pct": _num(100 * self.server_cpu_s / seconds),
            "loadgen_cpu_pct": _num(100 * self.client_cpu_s / seconds),
            "loadgen_sys_pct": _num(100 * self.client_sys_s / seconds),
            "softirq_pct": _num(100 * self.softirq_s / seconds),
            "other_cpu_pct": _num(100 * self.other_cpu_s / seconds),
            "rss_before_kb": self.rss_before_kb,
            "rss_after_kb": self.rss_after_kb,
            "rss_end_kb": self.rss_end_kb,
            "rss_per_conn_kb": _num(self.rss_per_conn_kb),
            "closes": self.closes,
            "errors": self.errors,
            "healthy": self.healthy,
            "loadgen_bound": self.loadgen_bound,
            "stuck": self.stuck,
            "slow_consumer": self.slow_consumer,
            "orders": self.orders,
            "ping": self.ping,
            "server_log": [f"{n} x {line}" for line, n in summarize_log(self.server_log).most_common(10)],
        }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(x, 2)


def behind_at_close(lines: list[str]) -> list[float]:
    """From rt's log: for each slow-consumer close, how long the session's transport had been over its limit."""
    out = []
    for line in lines:
        with contextlib.suppress(orjson.JSONDecodeError):
            record = orjson.loads(line)
            if isinstance(record, dict) and record.get("msg") == "slow consumer closed":
                out.append(float(record.get("behind_s", 0.0)))
    return out


def summarize_log(lines: list[str]) -> Counter[str]:
    """The server's warnings and errors, each as its message and the last line of its traceback, counted."""
    out: Counter[str] = Counter()
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            out[line[:200]] += 1
            continue
        if record.get("level") in ("debug", "info"):
            continue
        exc = str(record.get("exc", "")).strip().splitlines()
        out[f"{record.get('level')}: {str(record.get('msg', '')).strip()} {exc[-1] if exc else ''}"[:240]] += 1
    return out


FANOUT_HEAD = (
    f"{'server':<6} {'client':<10} {'conn':>10} {'rate':>5} {'ticks/s':>7} {'deliv/s':>8} {'ev/frm':>6} "
    f"{'missed':>6} {'p50 ms':>7} {'p99 ms':>8} {'max ms':>8} {'server':>6} {'loadgen':>7} {'sirq':>5} "
    f"{'other':>5} closes"
)


def fanout_row(r: Fanout) -> str:
    closes = ",".join(f"{c}x{n}" for c, n in sorted(r.closes.items())) or "-"
    s = r.seconds or math.nan
    return (
        f"{r.server:<6} {r.load.kind:<10} {r.connected:>5}/{r.load.clients:<4} {r.load.rate:>5.0f} "
        f"{r.ticks_per_s:>7.1f} {r.per_s:>8.0f} {r.events / max(r.frames, 1):>6.2f} {r.gaps:>6} "
        f"{r.pct_ms(0.5):>7.2f} {r.pct_ms(0.99):>8.2f} {r.pct_ms(1.0):>8.1f} "
        f"{100 * r.server_cpu_s / s:>5.0f}% {100 * r.client_cpu_s / s:>6.0f}% "
        f"{100 * r.softirq_s / s:>4.0f}% {100 * r.other_cpu_s / s:>4.0f}% {closes}"
        f"{'  p99>50' if r.pct_ms(0.99) >= P99_LIMIT_MS else ''}{'  loadgen-bound' if r.loadgen_bound else ''}"
    )


def fanout_notes(r: Fanout) -> list[str]:
    out = [f"    connect errors: {n} x {error}" for error, n in r.errors.items()]
    if abs(r.counted_vs_measured - 1) > 0.05:
        out.append(f"    counted connections got {r.counted_vs_measured:.2f}x the events of measured ones")
    out += [f"    server log: {n} x {line}" for line, n in summarize_log(r.server_log).most_common(5)]
    return out


def idle_row(r: Fanout) -> str:
    return (
        f"{r.server:<6} {r.load.kind:<10} {r.connected:>5}/{r.load.clients:<5} {r.rss_before_kb / 1024:>8.1f} MB "
        f"{r.rss_after_kb / 1024:>8.1f} MB {r.rss_per_conn_kb:>8.1f} KB/connection"
    )


@dataclass
class SweepRun:
    """One pass over the rates: each server's highest deliveries/s with p99 under the limit (`best`), and with
    any p99 as long as every client connected and none was closed (`peak`, the server's saturation figure)."""

    index: int
    rows: list[Fanout]

    def best(self, server: str) -> Fanout | None:
        ok = [r for r in self.rows if r.server == server and r.healthy]
        return max(ok, key=lambda r: r.per_s) if ok else None

    def peak(self, server: str) -> Fanout | None:
        ok = [r for r in self.rows if r.server == server and r.connected == r.load.clients and not r.closes]
        return max(ok, key=lambda r: r.per_s) if ok else None

    def ratio(self, pick: str = "best") -> float | None:
        rt, bare = getattr(self, pick)("rt"), getattr(self, pick)("bare")
        return rt.per_s / bare.per_s if rt and bare and bare.per_s else None

    def loadgen_bound(self, pick: str = "best") -> bool:
        return any(r is not None and r.loadgen_bound for r in (getattr(self, pick)("rt"), getattr(self, pick)("bare")))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run": self.index}
        for pick in ("best", "peak"):
            for server in ("rt", "bare"):
                r = getattr(self, pick)(server)
                out[f"{server}_{pick}_deliveries_per_s"] = round(r.per_s) if r else None
                out[f"{server}_{pick}_rate"] = r.load.rate if r else None
                out[f"{server}_{pick}_p99_ms"] = _num(r.pct_ms(0.99)) if r else None
            ratio = self.ratio(pick)
            out[f"{pick}_ratio"] = round(ratio, 3) if ratio is not None else None
            out[f"{pick}_loadgen_bound"] = self.loadgen_bound(pick)
        return out


def sweep_lines(runs: list[SweepRun]) -> list[str]:
    out: list[str] = []
    for pick, title in (
        ("best", f"highest deliveries/s with p99 < {P99_LIMIT_MS:g} ms"),
        ("peak", "highest deliveries/s at any p99 (saturation; every client connected, none closed)"),
    ):
        out.append(f"{title}:")
        out.append(
            f"  {'run':>3} {'rt deliv/s':>10} {'rate':>5} {'p99 ms':>7} {'bare deliv/s':>12} {'rate':>5} "
            f"{'p99 ms':>7} {'rt/bare':>8}"
        )
        for run in runs:
            j = run.to_json()
            out.append(
                f"  {run.index:>3} {_cell(j[f'rt_{pick}_deliveries_per_s']):>10} {_cell(j[f'rt_{pick}_rate']):>5} "
                f"{_cell(j[f'rt_{pick}_p99_ms'], '.1f'):>7} {_cell(j[f'bare_{pick}_deliveries_per_s']):>12} "
                f"{_cell(j[f'bare_{pick}_rate']):>5} {_cell(j[f'bare_{pick}_p99_ms'], '.1f'):>7} "
                f"{_cell(j[f'{pick}_ratio'], '.3f'):>8}{'  loadgen-bound' if j[f'{pick}_loadgen_bound'] else ''}"
            )
        ratios = [r for run in runs if (r := run.ratio(pick)) is not None]
        if ratios:
            out.append(
                f"  rt/bare over {len(ratios)} run(s): mean {sum(ratios) / len(ratios):.3f}, min {min(ratios):.3f}"
            )
        else:
            out.append("  rt/bare: no run where both servers had such a rate")
    return out


def sweep_summary(runs: list[SweepRun]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": [run.to_json() for run in runs]}
    for pick in ("best", "peak"):
        ratios = [r for run in runs if (r := run.ratio(pick)) is not None]
        out[f"{pick}_ratio_mean"] = round(sum(ratios) / len(ratios), 3) if ratios else None
        out[f"{pick}_ratio_min"] = round(min(ratios), 3) if ratios else None
    return out


def _cell(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


STUCK_HEAD = (
    f"{'server':<6} {'#':>2} {'outcome':<26} {'tcp while stopped':<26} {'changed ms':>10} {'unread KB':>9} "
    f"{'resumed ms':>10} {'close ms':>8} {'dropped ms':>10} {'stale events':>12}"
)


def stuck_rows(r: Fanout) -> list[str]:
    out = []
    for i, s in enumerate(r.stuck):
        out.append(
            f"{r.server:<6} {i:>2} {s['outcome']:<26} {s['tcp_while_stopped']:<26} {_cell(s['tcp_changed_ms']):>10} "
            f"{s['unread_kb_at_resume']:>9.1f} {_cell(s['resumed_ms']):>10} {_cell(s['close_frame_ms']):>8} "
            f"{_cell(s['dropped_ms']):>10} {s['events_after_resume']:>12}"
        )
    return out


def order_line(o: dict[str, Any], target_ms: float) -> str:
    line = (
        f"  {o['name']:<42} n {o['n']:>5}  p50 {o.get('rtt_p50_ms', math.nan):6.2f} ms  "
        f"p99 {o.get('rtt_p99_ms', math.nan):6.2f} ms  max {o.get('rtt_p100_ms', math.nan):7.2f} ms  "
        f"(target p99 < {target_ms:g} ms)  errors {o['errors'] or 'none'}"
    )
    if "server_p99_ms" in o:
        line += f"\n  {'  server time_out - time_in':<42}          p50 {o['server_p50_ms']:6.2f} ms  "
        line += f"p99 {o['server_p99_ms']:6.2f} ms  max {o['server_p100_ms']:7.2f} ms"
    return line
