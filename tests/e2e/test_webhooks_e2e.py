"""Webhooks end to end: a real `rt serve` delivering to a real HTTP receiver on 127.0.0.1 (SPEC §7). Trading events
arrive signed both ways, a rotated secret signs beside the new one, the outbox survives a receiver that is down and a
server restart, retries honour the answers (500, Retry-After, 410, redirects), a dead endpoint does not hold a
healthy one back, and destinations must be https and public unless allowed."""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import standardwebhooks
from websockets.sync.client import connect

import rt.client
from tests.e2e.checks import LeakCheck
from tests.e2e.receiver import HANG, Receiver, Reply, Request, receiving
from tests.e2e.server import Server, run_server
from tests.e2e.test_trading_e2e import GENEROUS, Trader, new_trader, ok, problem

pytestmark = pytest.mark.e2e

TIMEOUT_S = 4.0
CONCURRENCY = 4
ENV = {
    "RT_PAPER_TICK_MS": "0",
    "RT_PAPER_SYMBOLS": "BTC/USDT=46200,ETH/USDT=3500",
    "RT_PAPER_SLIPPAGE_BPS": "0",
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
    "RT_LOCKOUT_THRESHOLD": "100000",
    "RT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "RT_WEBHOOK_SCHEDULE": "200ms,400ms,800ms",
    "RT_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
    "RT_WEBHOOK_CONCURRENCY": str(CONCURRENCY),
}
LONG = {"exchange": "paper", "symbol": "ETH/USDT", "side": "long", "quantity": 0.01}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SCHEDULE_MAX_S = 0.8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, leaks: LeakCheck) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("webhooks") / "data", ENV) as started:
        yield leaks.watch(started)


@pytest.fixture
def trader(server: Server) -> Iterator[Trader]:
    made = new_trader(server)
    with made.http:
        yield made


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with receiving() as running:
        yield running


# endpoints, deliveries, signatures


def create_endpoint(
    http: httpx.Client, leaks: LeakCheck, url: str, events: tuple[str, ...] = ("*",)
) -> tuple[dict[str, Any], str]:
    body: dict[str, Any] = ok(http.post("/v1/webhooks", json={"url": url, "events": list(events)}), 201)
    secret = body.pop("secret")
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret), secret
    assert body["id"].startswith("whk_") and body["status"] == "enabled" and body["url"] == url
    leaks.secrets.add(secret)
    return body, secret


def deliveries(http: httpx.Client, endpoint_id: str) -> list[dict[str, Any]]:
    body = ok(http.get("/v1/webhooks/events", params={"endpoint_id": endpoint_id, "limit": 500}))
    found: list[dict[str, Any]] = body["deliveries"]
    assert {d["endpoint_id"] for d in found} <= {endpoint_id}
    return found


def poll(what: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    """`what()` once `done` holds for it; AssertionError with the last value after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {value!r}"[:3000])
        time.sleep(0.05)


def rt_signatures(request: Request) -> tuple[int, list[str]]:
    parts = [p.split("=", 1) for p in request.headers["x-rt-signature"].split(",")]
    (t,) = [int(v) for k, v in parts if k == "t"]
    return t, [v for k, v in parts if k == "v1"]


def verify(request: Request, secret: str) -> dict[str, Any]:
    """The delivery verifies under `secret` with the Standard Webhooks library, and with X-RT-Signature checked by
    hand as SPEC §7 says (hex HMAC-SHA256 of "<t>.<body>", key: the whole secret string)."""
    payload: dict[str, Any] = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    t, v1 = rt_signatures(request)
    expected = hmac.new(secret.encode(), f"{t}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert any(hmac.compare_digest(expected, v) for v in v1), "X-RT-Signature does not verify"
    assert int(request.headers["webhook-timestamp"]) == t // 1000
    assert abs(t / 1000 - request.at) < 60
    return payload


def assert_shape(request: Request) -> dict[str, Any]:
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("rt-webhooks/")
    body: dict[str, Any] = request.json()
    assert set(body) == {"id", "event", "timestamp", "data"}
    assert body["id"].startswith("evt_") and body["id"] == request.webhook_id
    assert TIMESTAMP.match(body["timestamp"]), body["timestamp"]
    return body


def sent_at(body: dict[str, Any]) -> float:
    return datetime.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def events_of(requests: list[Request]) -> list[str]:
    return [r.json()["event"] for r in requests]


def ws_url(server: Server, http: httpx.Client) -> str:
    token = ok(http.post("/v1/ws/token"))["token"]
    return server.url.replace("http://", "ws://", 1) + f"/v1/ws?token={token}&batch=0"


def test_trading_events_arrive_with_both_signatures(
    server: Server, trader: Trader, receiver: Receiver, leaks: LeakCheck
) -> None:
    http = trader.http
    everything, secret = create_endpoint(http, leaks, receiver.url("/all"))
    some, other_secret = create_endpoint(http, leaks, receiver.url("/some"), ("position.opened", "strategy.stopped"))
    envelope = ok(http.get("/v1/risk/envelope"))["envelope"]
    ok(http.put("/v1/risk/envelope", json={**envelope, **GENEROUS, "max_concurrent_positions": 5}))
    opened = [ok(http.post("/v1/positions", json=LONG), 201)["position"] for _ in range(4)]  # 4 of 5: 80%
    ok(http.post(f"/v1/positions/{opened[0]['id']}/close"))
    config = {"grid_levels": 5, "price_range": [40000, 48000], "quantity_per_level": "0.001"}
    grid = {"type": "grid", "symbol": "BTC/USDT", "name": "g", "config": config}
    strategy = ok(http.post("/v1/strategies", json=grid), 201)["strategy"]
    ok(http.post(f"/v1/strategies/{strategy['id']}/stop"))
    ok(http.post(f"/v1/strategies/{strategy['id']}/start"))
    ok(http.post(f"/v1/strategies/{strategy['id']}/stop"))
    ok(http.post("/v1/emergency/kill", json={"reason": "webhook drill", "confirm": True}))

    wanted = {
        "position.opened",
        "position.closed",
        "strategy.started",
        "strategy.stopped",
        "emergency.kill_triggered",
        "risk.limit_reached",
    }
    got = receiver.wait_for(lambda seen: wanted <= set(events_of(seen)), path="/all")
    for request in got:
        body = assert_shape(request)
        assert verify(request, secret) == body
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(other_secret).verify(request.body, request.headers)
    bodies = [r.json() for r in got]
    for body in bodies:
        if body["event"].startswith("position."):
            assert body["data"]["position_id"] == body["data"]["id"]
    assert {b["data"]["id"] for b in bodies if b["event"] == "position.opened"} >= {p["id"] for p in opened}
    warnings = [b["data"] for b in bodies if b["event"] == "risk.limit_reached" and b["data"]["level"] == "warning"]
    assert warnings and all(w["check"] and w["utilization"] >= 0.8 for w in warnings), warnings
    assert opened[0]["id"] in {b["data"]["id"] for b in bodies if b["event"] == "position.closed"}

    # The endpoint that wants two kinds gets those and nothing else, each delivery once and signed with its own secret.
    receiver.wait_for(lambda seen: events_of(seen).count("strategy.stopped") >= 2, path="/some")
    picked = poll(lambda: deliveries(http, some["id"]), lambda ds: all(d["status"] == "succeeded" for d in ds))
    some_requests = receiver.requests("/some")
    assert set(events_of(some_requests)) == {"position.opened", "strategy.stopped"}
    assert len({r.webhook_id for r in some_requests}) == len(some_requests) == len(picked)
    for request in some_requests:
        verify(request, other_secret)

    # The delivery log of the first endpoint: every event succeeded at its first attempt, with its latency.
    logged = poll(lambda: deliveries(http, everything["id"]), lambda ds: all(d["status"] == "succeeded" for d in ds))
    assert {d["event_id"] for d in logged} == {r.webhook_id for r in receiver.requests("/all")}
    for delivery in logged:
        assert delivery["id"].startswith("whd_") and delivery["attempts"] == 1 and delivery["last_status_code"] == 200
        (attempt,) = delivery["log"]
        assert attempt["status_code"] == 200 and attempt["latency_ms"] >= 0 and attempt["error"] is None


def test_after_rotation_each_delivery_carries_both_secrets(
    trader: Trader, receiver: Receiver, leaks: LeakCheck
) -> None:
    http = trader.http
    endpoint, old = create_endpoint(http, leaks, receiver.url())
    rotated = ok(http.post(f"/v1/webhooks/{endpoint['id']}/rotate-secret"))
    new = rotated.pop("secret")
    leaks.secrets.add(new)
    assert new != old and rotated["id"] == endpoint["id"]
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"].replace("Z", "+00:00"))
    assert abs(expires - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=5)
    shown = ok(http.get(f"/v1/webhooks/{endpoint['id']}"))
    assert "secret" not in shown and old not in str(shown) and new not in str(shown)
    assert shown["previous_secret_expires_at"] == rotated["previous_secret_expires_at"]

    ok(http.post("/v1/positions", json=LONG), 201)
    (request,) = receiver.wait_for(lambda seen: "position.opened" in events_of(seen))[:1]
    assert len(rt_signatures(request)[1]) == 2
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    # A receiver that holds only the old secret verifies, and so does one that holds only the new.
    assert verify(request, old) == verify(request, new) == request.json()
    # So does the SDK's helper, under either secret, with either scheme's headers alone.
    rt_only = {k: v for k, v in request.headers.items() if not k.startswith("webhook-")}
    standard_only = {k: v for k, v in request.headers.items() if k != "x-rt-signature"}
    for secret in (old, new):
        for headers in (rt_only, standard_only):
            assert rt.client.verify(request.body, headers, secret) == request.json()
    with pytest.raises(rt.client.WebhookVerificationError):
        rt.client.verify(request.body + b" ", request.headers, new)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook("whsec_" + "A" * 43 + "=").verify(request.body, request.headers)


def test_the_outbox_survives_a_receiver_down_and_a_server_restart(tmp_path: Path, leaks: LeakCheck) -> None:
    data_dir = tmp_path / "data"
    with receiving() as receiver:
        receiver.down()
        with run_server(data_dir, ENV) as first:
            leaks.watch(first)
            assert first.key is not None
            key = first.key
            with first.client(key) as http:
                endpoint, secret = create_endpoint(http, leaks, receiver.url(), ("position.opened", "position.closed"))
                opened = [ok(http.post("/v1/positions", json=LONG), 201)["position"] for _ in range(3)]
                ok(http.post(f"/v1/positions/{opened[0]['id']}/close"))
                failing = poll(
                    lambda: deliveries(http, endpoint["id"]),
                    lambda ds: len(ds) == 4 and all(d["attempts"] >= 2 for d in ds),
                )
            assert all(d["status"] == "pending" and d["next_attempt_at"] for d in failing)
        # stopped with SIGTERM (a graceful stop) while every delivery was still pending; then the receiver comes back
        assert "Application shutdown complete." in first.logs(), first.logs()[-2000:]
        receiver.up()
        with run_server(data_dir, ENV) as second:
            leaks.watch(second)
            with second.client(key) as http:
                got = receiver.wait_for(lambda seen: len({r.webhook_id for r in seen}) == 4)
                done = poll(
                    lambda: deliveries(http, endpoint["id"]), lambda ds: all(d["status"] == "succeeded" for d in ds)
                )
    assert {d["event_id"] for d in failing} == {d["event_id"] for d in done} == {r.webhook_id for r in got}
    assert sorted(events_of(got)) == ["position.closed"] + ["position.opened"] * 3
    for request in got:
        verify(request, secret)
    for delivery in done:
        *failed, last = delivery["log"]
        assert len(failed) >= 2 and delivery["attempts"] == len(delivery["log"])
        assert all(a["status_code"] is None and a["error"] for a in failed), failed
        assert last["status_code"] == 200 and delivery["last_status_code"] == 200
        assert delivery["next_attempt_at"] is None


def test_a_500_is_retried_and_retry_after_is_honoured(trader: Trader, receiver: Receiver, leaks: LeakCheck) -> None:
    http = trader.http
    receiver.answer("/flaky", Reply(500, b"oops"), Reply(503, headers={"Retry-After": "1"}))
    endpoint, secret = create_endpoint(http, leaks, receiver.url("/flaky"))
    test = ok(http.post(f"/v1/webhooks/{endpoint['id']}/test"), 202)["delivery"]
    assert test["event"] == "webhook.test" and test["endpoint_id"] == endpoint["id"]
    first, second, third = receiver.wait_count(3, path="/flaky")
    assert first.body == second.body == third.body and first.webhook_id == third.webhook_id == test["event_id"]
    assert first.json()["data"]["endpoint_id"] == endpoint["id"]
    verify(third, secret)
    # The first retry waits the schedule's 200 ms (+-20%); after the 503 it waits for Retry-After, capped at the
    # schedule's largest wait (800 ms).
    assert second.at - first.at < SCHEDULE_MAX_S * 0.8 + 0.5
    assert third.at - second.at >= SCHEDULE_MAX_S * 0.95
    (done,) = poll(lambda: deliveries(http, endpoint["id"]), lambda ds: ds and ds[0]["status"] == "succeeded")
    assert done["id"] == test["id"] and done["attempts"] == 3
    assert [a["status_code"] for a in done["log"]] == [500, 503, 200]
    assert done["log"][0]["response"] == "oops"
    # Redelivered by hand: the same delivery (and event) is sent once more, and its log grows by that attempt.
    (again,) = ok(http.post(f"/v1/webhooks/events/{done['id']}/redeliver"), 202)["deliveries"]
    assert again["id"] == done["id"]
    fourth = receiver.wait_count(4, path="/flaky")[3]
    assert fourth.webhook_id == test["event_id"] and fourth.body == first.body
    (redone,) = poll(lambda: deliveries(http, endpoint["id"]), lambda ds: ds and ds[0]["attempts"] == 4)
    assert redone["status"] == "succeeded" and [a["status_code"] for a in redone["log"]] == [500, 503, 200, 200]


def test_a_410_disables_the_endpoint_and_says_so_on_the_events_channel(
    server: Server, trader: Trader, receiver: Receiver, leaks: LeakCheck
) -> None:
    http = trader.http
    receiver.answer("/gone", then=Reply(410))
    endpoint, _ = create_endpoint(http, leaks, receiver.url("/gone"))
    with connect(ws_url(server, http), open_timeout=10) as ws:
        ws.send(orjson.dumps({"op": "subscribe", "channel": "events", "id": 1}).decode())
        ok(http.post(f"/v1/webhooks/{endpoint['id']}/test"), 202)
        receiver.wait_count(1, path="/gone")
        deadline = time.monotonic() + 30
        while True:
            message = orjson.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("type") == "event" and message["event"] == "webhook.endpoint_disabled":
                break
    assert message["data"]["endpoint_id"] == endpoint["id"] and message["data"]["url"] == endpoint["url"]
    assert "410" in message["data"]["reason"]
    shown = ok(http.get(f"/v1/webhooks/{endpoint['id']}"))
    assert shown["status"] == "disabled" and "410" in shown["disabled_reason"]
    (delivery,) = deliveries(http, endpoint["id"])
    assert delivery["status"] == "failed" and delivery["last_status_code"] == 410 and delivery["attempts"] == 1
    # A disabled endpoint gets no more deliveries: a new event makes none.
    ok(http.post("/v1/positions", json=LONG), 201)
    assert len(deliveries(http, endpoint["id"])) == 1
    assert len(receiver.requests("/gone")) == 1


def test_a_dead_endpoint_does_not_hold_back_a_healthy_one(trader: Trader, receiver: Receiver, leaks: LeakCheck) -> None:
    http = trader.http
    receiver.answer("/dead", then=HANG)
    dead_endpoint, _ = create_endpoint(http, leaks, receiver.url("/dead"), ("position.opened",))
    create_endpoint(http, leaks, receiver.url("/healthy"), ("position.opened",))
    count = 2 * CONCURRENCY
    for _ in range(count):
        ok(http.post("/v1/positions", json=LONG), 201)
    healthy = receiver.wait_count(count, path="/healthy")
    dead = receiver.requests("/dead")
    # The dead endpoint holds its slots (every one until its timeout), and the healthy one's deliveries all arrived
    # before the first of those could have ended.
    assert 1 <= len(dead) <= CONCURRENCY
    lags = [r.at - sent_at(r.json()) for r in healthy]
    assert max(lags) < TIMEOUT_S, lags
    assert len({r.webhook_id for r in healthy}) == count
    assert ok(http.delete(f"/v1/webhooks/{dead_endpoint['id']}"))["deleted"] is True


def test_a_redirect_is_not_followed(trader: Trader, receiver: Receiver, leaks: LeakCheck) -> None:
    http = trader.http
    receiver.answer("/moved", then=Reply(302, headers={"Location": receiver.url("/target")}))
    endpoint, _ = create_endpoint(http, leaks, receiver.url("/moved"))
    ok(http.post(f"/v1/webhooks/{endpoint['id']}/test"), 202)
    (delivery,) = poll(lambda: deliveries(http, endpoint["id"]), lambda ds: ds and ds[0]["attempts"] >= 2)
    assert receiver.requests("/target") == []
    assert delivery["status"] == "pending" and delivery["last_status_code"] == 302
    assert [a["status_code"] for a in delivery["log"][:2]] == [302, 302]
    assert ok(http.delete(f"/v1/webhooks/{endpoint['id']}"))["deleted"] is True


def test_unknown_events_and_urls_not_allowed_are_refused(trader: Trader, receiver: Receiver) -> None:
    http = trader.http
    body = problem(http.post("/v1/webhooks", json={"url": receiver.url(), "events": ["nope.x"]}), 400, "BAD_REQUEST")
    assert "nope.x" in str(body)
    # 127.0.0.1 is allowed on this server (RT_WEBHOOK_ALLOW_HOSTS); nothing else private is.
    for url in ("http://localhost:9/x", "https://10.1.2.3/x", "https://169.254.169.254/latest", "https://[::1]/x"):
        response = http.post("/v1/webhooks", json={"url": url, "events": ["*"]})
        problem(response, 400, "WEBHOOK_URL_NOT_ALLOWED")
    assert ok(http.get("/v1/webhooks"))["total"] == 0


def test_without_allowed_hosts_https_and_a_public_address_are_required(tmp_path: Path, leaks: LeakCheck) -> None:
    env = {k: v for k, v in ENV.items() if k != "RT_WEBHOOK_ALLOW_HOSTS"}
    with run_server(tmp_path / "data", env) as server, server.client(server.key) as http:
        leaks.watch(server)
        refused = (
            "http://127.0.0.1:8080/hook",
            "https://127.0.0.1/hook",
            "https://localhost/hook",
            "https://10.0.0.8/hook",
            "https://192.168.1.1/hook",
            "https://100.64.0.1/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/hook",
            "https://[::ffff:127.0.0.1]/hook",
            "https://[fd00:ec2::254]/hook",
            "https://user:pw@93.184.215.14/hook",
            "http://93.184.215.14/hook",
            "ftp://93.184.215.14/hook",
        )
        for url in refused:
            response = http.post("/v1/webhooks", json={"url": url, "events": ["*"]})
            body = problem(response, 400, "WEBHOOK_URL_NOT_ALLOWED")
            assert body["detail"], url
        assert ok(http.get("/v1/webhooks"))["total"] == 0
        public, _ = create_endpoint(http, leaks, "https://93.184.215.14/hook")  # a public address literal: no DNS
        assert ok(http.get("/v1/webhooks"))["webhooks"] == [public]
        assert ok(http.delete(f"/v1/webhooks/{public['id']}"))["deleted"] is True


def test_the_webhooks_bench_runs_in_its_quick_form() -> None:
    bench = Path(__file__).resolve().parents[2] / "bench" / "webhooks.py"
    done = subprocess.run(
        [sys.executable, str(bench), "--quick"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = {line.split("  ")[0].strip(): line for line in done.stdout.splitlines()}
    for name in ("event -> delivery, 1 endpoint, idle", "healthy endpoint beside a dead one"):
        assert name in rows, done.stdout
    (drain,) = [line for line in done.stdout.splitlines() if "drain after a restart" in line]
    assert "0 sent twice" in drain, drain


def test_an_endpoint_failing_past_the_give_up_window_is_disabled(tmp_path: Path, leaks: LeakCheck) -> None:
    with receiving() as receiver:
        receiver.down()
        with run_server(tmp_path / "data", {**ENV, "RT_WEBHOOK_GIVE_UP": "2s"}) as server:
            leaks.watch(server)
            with server.client(server.key) as http, connect(ws_url(server, http), open_timeout=10) as ws:
                ws.send(orjson.dumps({"op": "subscribe", "channel": "events", "id": 1}).decode())
                endpoint, _ = create_endpoint(http, leaks, receiver.url(), ("position.opened",))
                ok(http.post("/v1/positions", json=LONG), 201)
                shown = poll(lambda: ok(http.get(f"/v1/webhooks/{endpoint['id']}")), lambda e: e["failing_since"])
                assert shown["status"] == "enabled"
                disabled = poll(
                    lambda: ok(http.get(f"/v1/webhooks/{endpoint['id']}")), lambda e: e["status"] == "disabled"
                )
                deadline = time.monotonic() + 30
                while True:
                    message = orjson.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
                    if message.get("type") == "event" and message["event"] == "webhook.endpoint_disabled":
                        break
                (delivery,) = deliveries(http, endpoint["id"])
    assert disabled["disabled_reason"] == message["data"]["reason"] and "failing since" in disabled["disabled_reason"]
    assert message["data"]["endpoint_id"] == endpoint["id"]
    failing_for = datetime.fromisoformat(delivery["log"][-1]["at"].replace("Z", "+00:00")) - datetime.fromisoformat(
        shown["failing_since"].replace("Z", "+00:00")
    )
    assert failing_for >= timedelta(seconds=1.9), "disabled before the give-up window ended"
    assert delivery["status"] == "failed" and delivery["attempts"] >= 3
    assert all(a["status_code"] is None for a in delivery["log"])
