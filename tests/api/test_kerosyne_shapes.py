"""Kerosyne's shapes on the native API: the `error` member of every problem, the kill reply's fields and
POST /v1/positions answering 202 pending_validation when Cerberus and the venue take longer than the wait."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from rt.api.validations import Settling
from rt.app import create_app
from rt.exchanges import ExchangeUnavailable, OrderSpec, VenueOrder
from rt.runtime import Runtime
from tests.crash import settings
from tests.session.test_connection import principal_of, read_all, session_of

MARKET = {"exchange": "paper", "symbol": "ETH/USDT", "side": "long", "quantity": 0.01}
# 20 ETH at 3500 is 70,000 of notional, over the default max_position_size of 25,000.
TOO_BIG = {**MARKET, "quantity": 20}
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclasses.dataclass
class Api:
    http: httpx.AsyncClient
    runtime: Runtime
    key: str
    account_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


@contextlib.asynccontextmanager
async def serving(data_dir: Path, key: tuple[str, str] | None = None, **changes: Any) -> AsyncIterator[Api]:
    """The app on `data_dir` with a new full-access key, or with `key` (key, account id) made before."""
    app = create_app(dataclasses.replace(settings(data_dir), **changes))
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        if key is None:
            account = await runtime.keys.create_account("kerosyne")
            key = (await runtime.keys.create(account.id, "full", "pro_plus")).key, account.id
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rt.test") as http:
            yield Api(http, runtime, *key)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with serving(tmp_path) as made:
        yield made


def kerosyne_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """What a Kerosyne client reads of an error: `body["error"]`, whose code is the HTTP status."""
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == status, error
    assert isinstance(error["message"], str) and error["message"], error
    return error


# the error member


async def test_a_cerberus_refusal_reads_as_the_seed_shows_it(api: Api) -> None:
    refused = await api.http.post("/v1/positions", json=TOO_BIG, headers=api.headers)
    error = kerosyne_error(refused, 422)
    assert error["message"] == "Position validation failed"
    details = error["details"]
    assert details["reason"] == "Exceeds max position size"
    assert (details["limit"], details["check"]) == (25000, "position_size")
    assert details["requested"] >= 70000  # 20 at the ask
    problem = refused.json()
    assert (problem["code"], problem["details"]["check"]) == ("VALIDATION_FAILED", "position_size")

    order = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 20}
    error = kerosyne_error(await api.http.post("/v1/orders", json=order, headers=api.headers), 422)
    assert error["message"] == "Order validation failed"
    assert error["details"]["limit"] == 25000


async def test_every_problem_carries_its_status_as_the_kerosyne_code(api: Api) -> None:
    missing = kerosyne_error(await api.http.get("/v1/positions"), 401)
    assert missing["message"] == (await api.http.get("/v1/positions")).json()["detail"]

    unknown = kerosyne_error(await api.http.get("/v1/positions/pos_nope", headers=api.headers), 404)
    assert "pos_nope" in unknown["message"]

    bad = kerosyne_error(await api.http.post("/v1/positions", json={**MARKET, "side": "up"}, headers=api.headers), 400)
    assert [e["field"] for e in bad["details"]["errors"]] == ["side"]

    kill = await api.http.post("/v1/emergency/kill", json={"reason": "drill", "confirm": True}, headers=api.headers)
    assert kill.status_code == 200, kill.text
    locked = kerosyne_error(await api.http.post("/v1/positions", json=MARKET, headers=api.headers), 423)
    assert locked["details"] == {"check": "trading_state"}


async def test_a_websocket_error_frame_carries_the_kerosyne_member(tmp_path: Path) -> None:
    async with serving(tmp_path) as api:
        principal = await principal_of(api.runtime)
        frames = [
            orjson.dumps({"op": "position.open", "id": 1, "params": TOO_BIG}).decode(),
            orjson.dumps({"op": "subscribe", "channel": "nope", "id": 2}).decode(),
        ]
        answers = await read_all(session_of(api.runtime, principal, frames))
    by_id = {frame["id"]: frame for frame in answers if frame["type"] == "error"}
    refused, unknown = by_id[1]["error"], by_id[2]["error"]
    assert (refused["status"], refused["error"]["code"]) == (422, 422)
    assert refused["error"]["message"] == "Validation failed"
    assert refused["error"]["details"]["limit"] == 25000
    assert (unknown["status"], unknown["error"]["code"]) == (400, 400)


# the kill reply


async def test_the_kill_reply_carries_the_seeds_fields_and_says_it_completed(api: Api) -> None:
    for _ in range(2):
        opened = await api.http.post("/v1/positions", json=MARKET, headers=api.headers)
        assert opened.status_code == 201, opened.text
    before = datetime.now(UTC)
    kill = await api.http.post(
        "/v1/emergency/kill", json={"reason": "volatility", "confirm": True}, headers=api.headers
    )
    assert kill.status_code == 200, kill.text
    report = kill.json()
    assert (report["status"], report["positions_closing"], report["strategies_halting"]) == ("completed", 2, 0)
    assert (report["positions_closed"], report["positions_failed"], report["orders_failed"]) == (2, 0, 0)
    assert RFC3339_MS.match(report["estimated_completion"]), report
    done = datetime.fromisoformat(report["estimated_completion"])
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= done <= datetime.now(UTC)
    positions = await api.http.get("/v1/positions", headers=api.headers)
    assert positions.json()["total"] == 0

    unlock = await api.http.post("/v1/risk/kill", json={"action": "UNLOCK"}, headers=api.headers)
    assert unlock.status_code == 200, unlock.text
    assert (unlock.json()["status"], unlock.json()["positions_closing"]) == ("completed", 0)
    assert RFC3339_MS.match(unlock.json()["estimated_completion"])


async def test_a_kill_whose_close_the_venue_fails_says_partial(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = await api.http.post("/v1/positions", json=MARKET, headers=api.headers)
    assert opened.status_code == 201, opened.text

    async def down(spec: OrderSpec) -> VenueOrder:
        raise ExchangeUnavailable("paper is down")

    monkeypatch.setattr(api.runtime.engine.venues.paper, "place", down)
    kill = await api.http.post("/v1/emergency/kill", json={"reason": "drill", "confirm": True}, headers=api.headers)
    assert kill.status_code == 200, kill.text
    report = kill.json()
    assert (report["status"], report["positions_closing"], report["positions_failed"]) == ("partial", 0, 1)
    assert report["trading_state"] == "locked"


async def test_a_kill_whose_cancel_the_venue_fails_says_partial_and_leaves_the_order_open(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    resting = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "limit", "quantity": 0.01}
    placed = await api.http.post("/v1/orders", json={**resting, "price": 1000}, headers=api.headers)
    assert placed.status_code in (200, 201), placed.text
    order_id = placed.json()["order"]["id"]
    assert placed.json()["order"]["status"] == "open"

    async def down(venue_order_id: str, symbol: str) -> VenueOrder:
        raise ExchangeUnavailable("paper is down")

    monkeypatch.setattr(api.runtime.engine.venues.paper, "cancel", down)
    kill = await api.http.post("/v1/emergency/kill", json={"reason": "drill", "confirm": True}, headers=api.headers)
    assert kill.status_code == 200, kill.text
    report = kill.json()
    assert (report["status"], report["orders_canceled"], report["orders_failed"]) == ("partial", 0, 1)
    assert (report["positions_closing"], report["positions_failed"]) == (0, 0)
    assert report["trading_state"] == "locked"
    shown = await api.http.get(f"/v1/orders/{order_id}", headers=api.headers)
    assert shown.status_code == 200 and shown.json()["order"]["status"] == "open", shown.text
    kerosyne_error(await api.http.post("/v1/positions", json=MARKET, headers=api.headers), 423)


# 202 pending_validation


class Gate:
    """One method of the paper venue held until the test opens the gate: a venue slower than the wait."""

    def __init__(self, call: Callable[..., Awaitable[Any]]) -> None:
        self._call = call
        self.open = asyncio.Event()
        self.calls = 0

    async def __call__(self, *args: Any) -> Any:
        await self.open.wait()
        self.calls += 1
        return await self._call(*args)


def slow_venue(api: Api, monkeypatch: pytest.MonkeyPatch, method: str = "place") -> Gate:
    paper = api.runtime.engine.venues.paper
    gate = Gate(getattr(paper, method))
    monkeypatch.setattr(paper, method, gate)
    return gate


async def settled(runtime: Runtime) -> None:
    """Every validation under way has ended (the bound is far above what they take)."""
    assert not await runtime.validations.settle(within_s=10)
    assert not len(runtime.validations)


class Joins:
    """Counts the requests that found a validation under way with their idempotency key, and waits for them."""

    def __init__(self, api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
        validations = api.runtime.validations
        real = validations.under_key
        self.count = 0
        self._changed = asyncio.Event()

        def under_key(account_id: str, key: str) -> Settling | None:
            found = real(account_id, key)
            if found is not None:
                self.count += 1
                self._changed.set()
            return found

        monkeypatch.setattr(validations, "under_key", under_key)

    async def reach(self, count: int) -> None:
        """Once `count` requests joined: each is then waiting for the validation (it waits as soon as it joins)."""
        while self.count < count:
            self._changed.clear()
            await self._changed.wait()


async def position_events(api: Api, position_id: str) -> list[str]:
    deliveries = await api.runtime.bus.history(api.account_id, "positions", 0)
    assert deliveries is not None
    return [d.event.event for d in deliveries if d.event.data.get("id") == position_id]


async def test_a_position_slower_than_the_wait_is_answered_pending_validation_then_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, validation_wait_ms=20) as api:
        gate = slow_venue(api, monkeypatch)
        answer = await api.http.post("/v1/positions", json={**MARKET, "stop_loss": 3000}, headers=api.headers)
        assert answer.status_code == 202, answer.text
        pending = answer.json()["position"]
        assert pending["status"] == "pending_validation" and pending["id"].startswith("pos_")
        assert (pending["symbol"], pending["side"], pending["quantity"], pending["stop_loss"]) == (
            "ETH/USDT",
            "long",
            0.01,
            3000,
        )
        assert pending["validation"]["cerberus_status"] == "validating"
        assert pending["validation"]["checks"][:3] == ["position_size", "exposure_limit", "daily_loss_limit"]
        assert RFC3339_MS.match(pending["created_at"])

        shown = await api.http.get(f"/v1/positions/{pending['id']}", headers=api.headers)
        assert shown.status_code == 200 and shown.json()["position"]["status"] == "pending_validation"

        gate.open.set()
        await settled(api.runtime)
        shown = await api.http.get(f"/v1/positions/{pending['id']}", headers=api.headers)
        assert shown.status_code == 200, shown.text
        assert shown.json()["position"]["status"] == "open"
        assert await position_events(api, pending["id"]) == ["position.opened"]


async def test_a_refusal_after_a_pending_answer_leaves_the_position_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, validation_wait_ms=20) as api:
        gate = slow_venue(api, monkeypatch, "ticker")  # Cerberus judges at the ticker: it waits for it
        answer = await api.http.post("/v1/positions", json=TOO_BIG, headers=api.headers)
        assert answer.status_code == 202, answer.text
        position_id = answer.json()["position"]["id"]
        gate.open.set()
        await settled(api.runtime)
        shown = await api.http.get(f"/v1/positions/{position_id}", headers=api.headers)
        assert shown.json()["position"]["status"] == "rejected"
        assert await position_events(api, position_id) == ["position.rejected"]


async def test_a_retry_with_the_idempotency_key_gets_the_settled_answer_and_trades_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, validation_wait_ms=20) as api:
        gate = slow_venue(api, monkeypatch)
        headers = {**api.headers, "Idempotency-Key": "open-1"}
        first = await api.http.post("/v1/positions", json=MARKET, headers=headers)
        assert first.status_code == 202 and first.json()["position"]["status"] == "pending_validation"
        position_id = first.json()["position"]["id"]

        # While it is still settling: the same placeholder, the same id.
        again = await api.http.post("/v1/positions", json=MARKET, headers=headers)
        assert again.status_code == 202 and again.json()["position"]["id"] == position_id
        other = await api.http.post("/v1/positions", json={**MARKET, "quantity": 0.02}, headers=headers)
        assert other.status_code == 409 and other.json()["error"]["code"] == 409

        retry = asyncio.create_task(api.http.post("/v1/positions", json=MARKET, headers=headers))
        await asyncio.sleep(0)
        gate.open.set()
        await settled(api.runtime)
        replayed = await api.http.post("/v1/positions", json=MARKET, headers=headers)
        for answer in (await retry, replayed):
            assert answer.status_code == 201, answer.text
            assert answer.headers["idempotent-replayed"] == "true"
            assert answer.json()["position"]["id"] == position_id
            assert answer.json()["position"]["status"] == "open"
        assert gate.calls == 1
        listed = await api.http.get("/v1/positions", params={"status": "all"}, headers=api.headers)
        assert [p["id"] for p in listed.json()["positions"]] == [position_id]


async def test_a_position_settling_in_time_is_answered_as_settled(api: Api) -> None:
    answer = await api.http.post("/v1/positions", json=MARKET, headers={**api.headers, "Idempotency-Key": "k"})
    assert answer.status_code == 201, answer.text
    assert answer.json()["position"]["status"] == "open"
    assert answer.json()["position"]["validation"]["cerberus_status"] == "passed"
    assert "idempotent-replayed" not in answer.headers


async def test_a_stopping_server_lets_a_pending_validation_settle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, validation_wait_ms=0) as api:
        gate = slow_venue(api, monkeypatch)
        answer = await api.http.post("/v1/positions", json=MARKET, headers=api.headers)
        assert answer.status_code == 202, answer.text
        position_id = answer.json()["position"]["id"]
        key = api.key, api.account_id
        engine = api.runtime.engine
        real_close, settling_at_close = engine.close, []

        async def close() -> None:
            settling_at_close.append(len(api.runtime.validations))
            await real_close()

        monkeypatch.setattr(engine, "close", close)
        # The venue answers while the server stops: the engine must not stop before the position settled.
        asyncio.get_running_loop().call_later(0.05, gate.open.set)
    assert settling_at_close == [0]
    async with serving(tmp_path, key) as api:
        shown = await api.http.get(f"/v1/positions/{position_id}", headers=api.headers)
        assert shown.status_code == 200, shown.text
        assert shown.json()["position"]["status"] == "open"


async def test_retries_joining_a_refused_position_each_get_an_answer_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A slow refill: each request's X-RateLimit-Remaining is one less than the one before.
    async with serving(tmp_path, validation_wait_ms=20, tier_limits=("pro_plus=1/100",)) as api:

        async def down(spec: OrderSpec) -> VenueOrder:
            raise ExchangeUnavailable("paper is down")

        gate = Gate(down)
        monkeypatch.setattr(api.runtime.engine.venues.paper, "place", gate)
        headers = {**api.headers, "Idempotency-Key": "open-down"}
        first = await api.http.post("/v1/positions", json=MARKET, headers=headers)
        assert first.status_code == 202, first.text
        joins = Joins(api, monkeypatch)
        retries = [asyncio.create_task(api.http.post("/v1/positions", json=MARKET, headers=headers)) for _ in "ab"]
        await joins.reach(2)
        gate.open.set()
        answers = [await retry for retry in retries]
    for answer in answers:
        kerosyne_error(answer, 503)
        assert "idempotent-replayed" not in answer.headers  # a 503 is not kept: a later retry runs again
        assert len(answer.headers.get_list("x-ratelimit-remaining")) == 1
    # Each request spent one of the key's requests and is told so.
    assert len({answer.headers["x-ratelimit-remaining"] for answer in answers}) == 2


async def test_a_position_opened_while_the_server_stops_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, validation_wait_ms=20) as api:
        gate = slow_venue(api, monkeypatch)
        first = await api.http.post("/v1/positions", json=MARKET, headers=api.headers)
        assert first.status_code == 202, first.text
        draining = asyncio.create_task(api.runtime.validations.drain(within_s=10))
        await asyncio.sleep(0)  # the drain has begun
        late = await api.http.post("/v1/positions", json=MARKET, headers=api.headers)
        assert kerosyne_error(late, 503)["message"] == "the server is shutting down"
        assert late.json()["code"] == "SERVICE_UNAVAILABLE"
        gate.open.set()
        await draining
        assert gate.calls == 1
        listed = await api.http.get("/v1/positions", params={"status": "all"}, headers=api.headers)
        assert [p["id"] for p in listed.json()["positions"]] == [first.json()["position"]["id"]]


async def test_requests_waiting_for_a_validation_the_stopping_server_cuts_off_are_told_it_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path, validation_wait_ms=60_000) as api:
        gate = slow_venue(api, monkeypatch)
        headers = {**api.headers, "Idempotency-Key": "open-cut"}
        joins = Joins(api, monkeypatch)
        waiting = [asyncio.create_task(api.http.post("/v1/positions", json=MARKET, headers=headers)) for _ in "ab"]
        await joins.reach(1)
        await api.runtime.validations.drain(within_s=0)
        for answer in [await request for request in waiting]:
            assert kerosyne_error(answer, 503)["message"] == "the server is shutting down"
        assert gate.calls == 0
        listed = await api.http.get("/v1/positions", params={"status": "all"}, headers=api.headers)
        assert listed.json()["total"] == 0
