"""One CollectorRegistry per Runtime: the process, the instruments, and the sessions and hub read at scrape."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from rt.metrics.instruments import INSTRUMENTS, ORDERS_REFUSED

if TYPE_CHECKING:
    from rt.runtime import Runtime

__all__ = ["RuntimeCollector", "registry"]


class RuntimeCollector:
    """The WebSocket numbers, read from the runtime's sessions and hub when scraped (names kept since the first
    release: dashboards use them)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        from rt.session.manager import LATENCY_BUCKETS_MS

        sessions = self._runtime.sessions
        hub = self._runtime.hub
        depths = [s.queue_depth for s in sessions.all()]
        yield GaugeMetricFamily("rt_ws_connections", "Open WebSocket sessions.", value=len(depths))
        yield CounterMetricFamily("rt_ws_connections_accepted", "WebSocket sessions accepted.", value=sessions.accepted)
        yield GaugeMetricFamily(
            "rt_ws_subscriptions", "Channel subscriptions of open sessions.", value=hub.subscriptions()
        )
        yield CounterMetricFamily(
            "rt_events_fanned_out", "Event messages handed to session queues.", value=hub.fanned_out
        )
        yield GaugeMetricFamily(
            "rt_hub_fanout_pending",
            "Subscribers the running fan-outs have still to hand what was published for them.",
            value=hub.pending,
        )
        yield GaugeMetricFamily("rt_ws_queue_depth", "Messages waiting in all session send queues.", value=sum(depths))
        yield GaugeMetricFamily(
            "rt_ws_queue_depth_max",
            "Messages waiting in the fullest session send queue (closed with 4008 at RT_WS_QUEUE).",
            value=max(depths, default=0),
        )
        yield CounterMetricFamily(
            "rt_ws_slow_consumer_closes", "Sessions closed with 4008.", value=sessions.slow_consumer_closes
        )
        # The sessions count per bucket; the exposition counts up to each bound.
        below = accumulate(sessions.latency_counts)
        buckets: list[tuple[str, float]] = [(str(b), n) for b, n in zip(LATENCY_BUCKETS_MS, below, strict=False)]
        buckets.append(("+Inf", sessions.commands))
        yield HistogramMetricFamily(
            "rt_ws_command_latency_ms",
            "WebSocket command latency, time_in to time_out.",
            buckets=buckets,
            sum_value=round(sessions.latency_sum_ms, 3),
        )


def registry(runtime: Runtime) -> CollectorRegistry:
    from rt.engine import risk

    made = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=made)
    PlatformCollector(registry=made)
    GCCollector(registry=made)
    for instrument in INSTRUMENTS:
        made.register(instrument)
    made.register(RuntimeCollector(runtime))
    # Every check has a series from the start, so a refusal rate is 0, not missing.
    for check in (*risk.CHECKS, risk.STRATEGY):
        ORDERS_REFUSED.labels(check)
    return made
