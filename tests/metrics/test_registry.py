"""rt/metrics/registry: one registry per runtime, with the process metrics and every series of the first release."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rt.config import Settings
from rt.metrics import registry
from rt.metrics.registry import RuntimeCollector
from rt.runtime import open_runtime

# Dashboards read these: the names and types the hand-written exposition had.
FIRST_RELEASE = {
    "rt_ws_connections": "gauge",
    "rt_ws_connections_accepted": "counter",
    "rt_ws_subscriptions": "gauge",
    "rt_events_fanned_out": "counter",
    "rt_ws_queue_depth": "gauge",
    "rt_ws_slow_consumer_closes": "counter",
    "rt_ws_command_latency_ms": "histogram",
}
ADDED = {
    "rt_ws_queue_depth_max": "gauge",
    "rt_http_request_duration_seconds": "histogram",
    "rt_orders_accepted": "counter",
    "rt_orders_refused": "counter",
    "rt_kill_duration_seconds": "histogram",
    "rt_hub_fanout_duration_seconds": "histogram",
    "rt_store_commit_duration_seconds": "histogram",
}


def settings(path: Path) -> Settings:
    return Settings.from_env({"RT_DATA_DIR": str(path), "RT_PAPER_TICK_MS": "0"})


def families(text: bytes) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text.decode())}


async def test_two_runtimes_in_one_process_have_a_registry_each_with_the_process_metrics(tmp_path: Path) -> None:
    async with (
        open_runtime(settings(tmp_path / "one")) as one,
        open_runtime(settings(tmp_path / "two")) as two,
    ):
        first, second = registry(one), registry(two)
        assert first is not second
        for made in (first, second):
            found = families(generate_latest(made))
            assert found.keys() >= {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"}
            assert {name: found.get(name) for name in FIRST_RELEASE} == FIRST_RELEASE
            assert {name: found.get(name) for name in ADDED} == ADDED
    # The process-wide default registry is left to whoever else lives in the process.
    assert prometheus_client.REGISTRY.get_sample_value("rt_orders_accepted_total") is None


async def test_the_first_release_series_keep_their_exact_names_and_buckets(tmp_path: Path) -> None:
    async with open_runtime(settings(tmp_path)) as runtime:
        text = generate_latest(registry(runtime)).decode()
    lines = {line.rpartition(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert {
        "rt_ws_connections",
        "rt_ws_connections_accepted_total",
        "rt_ws_subscriptions",
        "rt_events_fanned_out_total",
        "rt_ws_queue_depth",
        "rt_ws_slow_consumer_closes_total",
        'rt_ws_command_latency_ms_bucket{le="0.5"}',
        'rt_ws_command_latency_ms_bucket{le="1"}',
        'rt_ws_command_latency_ms_bucket{le="1000"}',
        'rt_ws_command_latency_ms_bucket{le="+Inf"}',
        "rt_ws_command_latency_ms_sum",
        "rt_ws_command_latency_ms_count",
    } <= lines
    assert not any(line.endswith("_created") for line in lines)
    # Each Cerberus check has its refusal series from the start.
    assert 'rt_orders_refused_total{check="position_size"}' in lines
    assert 'rt_orders_refused_total{check="strategy_limit"}' in lines


@dataclass
class FakeSession:
    queue_depth: int


@dataclass
class FakeSessions:
    sessions: list[FakeSession]
    accepted: int = 7
    slow_consumer_closes: int = 2
    latency_counts: list[int] = field(default_factory=lambda: [1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1])
    latency_sum_ms: float = 1502.25
    commands: int = 4

    def all(self) -> list[FakeSession]:
        return self.sessions


@dataclass
class FakeHub:
    fanned_out: int = 40
    pending: int = 300

    def subscriptions(self) -> int:
        return 5


def test_websocket_series_are_read_from_the_runtimes_sessions_and_hub_at_scrape() -> None:
    sessions = FakeSessions([FakeSession(3), FakeSession(0), FakeSession(9)])
    runtime = cast(Any, SimpleNamespace(sessions=sessions, hub=FakeHub()))
    made = CollectorRegistry()
    made.register(RuntimeCollector(runtime))
    value = made.get_sample_value

    assert value("rt_ws_connections") == 3
    assert value("rt_ws_queue_depth") == 12
    assert value("rt_ws_queue_depth_max") == 9
    assert value("rt_ws_connections_accepted_total") == 7
    assert value("rt_ws_slow_consumer_closes_total") == 2
    assert value("rt_events_fanned_out_total") == 40
    assert value("rt_ws_subscriptions") == 5
    assert value("rt_hub_fanout_pending") == 300
    assert value("rt_ws_command_latency_ms_bucket", {"le": "0.5"}) == 1
    assert value("rt_ws_command_latency_ms_bucket", {"le": "1"}) == 3
    assert value("rt_ws_command_latency_ms_bucket", {"le": "1000"}) == 3
    assert value("rt_ws_command_latency_ms_bucket", {"le": "+Inf"}) == 4
    assert value("rt_ws_command_latency_ms_sum") == 1502.25
    sessions.sessions = []
    assert (value("rt_ws_connections"), value("rt_ws_queue_depth_max")) == (0, 0)
