"""rt/metrics/server: the scrape port's answers, whatever arrives and whatever a collector does."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric

from rt.metrics.server import _response


class Broken:
    def collect(self) -> Iterator[Metric]:
        raise RuntimeError("a collector bug")
        yield  # pragma: no cover


def registry() -> CollectorRegistry:
    made = CollectorRegistry()
    Counter("rt_test_things", "Things.", registry=made).inc(3)
    return made


def test_get_metrics_is_the_text_format_and_anything_else_is_404() -> None:
    answer = _response(registry(), b"GET /metrics?debug=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert b"rt_test_things_total 3.0" in body
    assert f"Content-Length: {len(body)}".encode() in head
    for request in (b"GET /other HTTP/1.1\r\n\r\n", b"POST /metrics HTTP/1.1\r\n\r\n", b"\x00garbage\r\n\r\n"):
        assert _response(registry(), request).startswith(b"HTTP/1.1 404 Not Found")
    assert _response(registry(), b"HEAD /metrics HTTP/1.1\r\n\r\n").endswith(b"\r\n\r\n")


def test_a_failing_collector_is_a_500_and_a_log_line_not_a_dropped_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = CollectorRegistry()
    broken.register(Broken())
    answer = _response(broken, b"GET /metrics HTTP/1.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error")
    assert "metrics collection failed" in caplog.text
