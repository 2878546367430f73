"""The fan-out benchmark's verdicts: which runs count toward deliveries/s at p99 < 50 ms, and the rt/bare ratio."""

from __future__ import annotations

from bench.fanout_report import Fanout, Load, SweepRun, sweep_summary


def run(server: str, rate: float, per_s: int, p99_ms: float, connected: int = 100, closes: int = 0) -> Fanout:
    r = Fanout(server, Load(100, rate, 10.0, 2, "picows", None))
    r.connected, r.seconds, r.events = connected, 10.0, per_s * 10
    r.latencies_us = sorted([1000] * 98 + [int(p99_ms * 1000)] * 2)
    if closes:
        r.closes = {"4008": closes}
    return r


def test_best_is_the_highest_deliveries_with_p99_under_the_limit() -> None:
    sweep = SweepRun(1, [run("rt", 100, 10_000, 5.0), run("rt", 200, 19_000, 49.0), run("rt", 300, 25_000, 80.0)])
    best = sweep.best("rt")
    assert best is not None and best.load.rate == 200
    peak = sweep.peak("rt")
    assert peak is not None and peak.load.rate == 300


def test_a_run_with_closed_or_missing_clients_does_not_count() -> None:
    sweep = SweepRun(
        1, [run("rt", 100, 10_000, 5.0), run("rt", 200, 19_000, 5.0, closes=3), run("rt", 300, 28_000, 5.0, 90)]
    )
    best, peak = sweep.best("rt"), sweep.peak("rt")
    assert best is not None and best.load.rate == 100
    assert peak is not None and peak.load.rate == 100


def test_ratio_per_run_then_mean_and_min() -> None:
    runs = [
        SweepRun(1, [run("rt", 100, 8_000, 5.0), run("bare", 100, 10_000, 5.0)]),
        SweepRun(2, [run("rt", 100, 9_000, 5.0), run("bare", 100, 10_000, 5.0)]),
        SweepRun(3, [run("rt", 100, 9_000, 60.0), run("bare", 100, 10_000, 5.0)]),
    ]
    assert [r.ratio() for r in runs] == [0.8, 0.9, None]
    summary = sweep_summary(runs)
    assert summary["best_ratio_mean"] == 0.85
    assert summary["best_ratio_min"] == 0.8
    assert summary["peak_ratio_min"] == 0.8
