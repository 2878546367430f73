"""rt/metrics/registry: one registry per runtime, with the process metrics and every series of the first release."""

from __future__ import annotations

from pathlib import Path

import prometheus_client
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from rt.config import Settings
from rt.metrics import registry
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
