"""rt/client/stream: a stream that cannot connect says why on each attempt and, when bounded, gives up."""

from __future__ import annotations

import pytest

from rt.client import Client
from rt.client.stream import Retry, StreamUnavailable
from tests.e2e.server import free_port


async def test_a_bounded_stream_reports_each_failure_and_gives_up() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    heard: list[Retry] = []
    async with Client(url, "rt_live_" + "0" * 32) as client:
        stream = client.stream("orders", max_attempts=3, max_backoff=0.05, on_retry=heard.append)
        assert stream.url == url.replace("http://", "ws://") + "/v1/ws"
        with pytest.raises(StreamUnavailable) as raised:
            async for _ in stream:
                pytest.fail("nothing listens there")
    assert raised.value.attempts == 3
    assert [r.attempt for r in heard] == [1, 2]
    for reason in [r.reason for r in heard] + [raised.value.reason]:
        assert reason == f"cannot connect to {url}: connection refused (is rt serve listening there?)"
    assert all(0 < r.delay <= 0.05 for r in heard)
    assert stream.reconnects == 2


async def test_an_unresolvable_host_is_named_in_the_reason() -> None:
    async with Client("http://rt-host.invalid:8080", "rt_live_" + "0" * 32) as client:
        with pytest.raises(StreamUnavailable) as raised:
            async for _ in client.stream("orders", max_attempts=1):
                pytest.fail("no such host")
    assert raised.value.reason.startswith("cannot connect to http://rt-host.invalid:8080: ")
    assert "connection refused" not in raised.value.reason


async def test_a_stream_over_several_urls_tries_the_next_at_once_and_backs_off_once_all_have_failed() -> None:
    first, second = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    heard: list[Retry] = []
    async with Client([first, second], "rt_live_" + "0" * 32) as client:
        stream = client.stream("orders", max_attempts=4, max_backoff=0.05, on_retry=heard.append)
        with pytest.raises(StreamUnavailable) as raised:
            async for _ in stream:
                pytest.fail("nothing listens there")
    refused = "cannot connect to {}: connection refused (is rt serve listening there?)"
    assert [r.reason for r in heard] + [raised.value.reason] == [refused.format(u) for u in (first, second) * 2]
    assert heard[0].delay == 0
    assert all(0 < r.delay <= 0.05 for r in heard[1:])
    assert client.base_url == first  # moved on from each
