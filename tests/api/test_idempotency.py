"""rt/api/idempotency: a retry after a crash between the trade's commit and anything after it trades once.

The process "dies" right after the store commits (an exception no handler catches, as a kill would leave it); a new
app over the same data dir is the restart; the retry with the same key must get the first answer.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from rt.app import create_app
from rt.records.trading import TradeBatch
from rt.runtime import Runtime
from tests.crash import Died, die_after_commit, settings

ORDER = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 1000}
# Far over the default max_position_size: Cerberus refuses it (422) and the rejected order is stored.
TOO_BIG = {"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 20}


@contextlib.asynccontextmanager
async def serving(data_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    app = create_app(settings(data_dir))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rt.test") as http:
            yield http, app.state.runtime


async def full_key(runtime: Runtime) -> str:
    account = await runtime.keys.create_account("crash")
    return (await runtime.keys.create(account.id, "full", "pro_plus")).key


async def orders_of(http: httpx.AsyncClient, key: str) -> list[dict[str, Any]]:
    answer = await http.get("/v1/orders", params={"status": "all"}, headers={"X-API-Key": key})
    assert answer.status_code == 200, answer.text
    orders: list[dict[str, Any]] = answer.json()["orders"]
    return orders


@pytest.mark.parametrize(("body", "status"), [(ORDER, 201), (TOO_BIG, 422)], ids=["placed", "cerberus-rejected"])
async def test_a_retry_after_a_crash_right_after_the_commit_returns_the_first_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: dict[str, Any], status: int
) -> None:
    headers = {"Idempotency-Key": "crash-1"}
    async with serving(tmp_path) as (http, runtime):
        key = await full_key(runtime)
        headers["X-API-Key"] = key
        committed = die_after_commit(runtime, monkeypatch)
        with pytest.raises(Died):
            await http.post("/v1/orders", json=body, headers=headers)
        assert committed, "the crash must come after a commit"
        monkeypatch.undo()

    async with serving(tmp_path) as (http, runtime):
        stored = await orders_of(http, key)
        assert len(stored) == 1
        retry = await http.post("/v1/orders", json=body, headers=headers)
        assert retry.status_code == status, retry.text
        assert retry.headers["idempotent-replayed"] == "true"
        if status == 201:
            assert retry.json()["order"]["id"] == stored[0]["id"]
        else:
            assert retry.json()["code"] == "VALIDATION_FAILED"
            assert stored[0]["status"] == "rejected"
        assert await orders_of(http, key) == stored


async def test_the_answer_is_stored_in_the_same_commit_as_the_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(tmp_path) as (http, runtime):
        key = await full_key(runtime)
        store = runtime.store
        real = store.save
        batches: list[TradeBatch] = []

        async def spy(batch: TradeBatch) -> None:
            batches.append(batch)
            await real(batch)

        monkeypatch.setattr(store, "save", spy)
        first = await http.post("/v1/orders", json=ORDER, headers={"X-API-Key": key, "Idempotency-Key": "same-tx"})
        assert first.status_code == 201, first.text
        with_order = [b for b in batches if b.orders]
        assert len(with_order) == 1
        (record,) = with_order[0].responses
        assert (record.key, record.response.status) == ("h:same-tx", 201)
        assert orjson.loads(record.response.body) == first.json()


async def test_a_strategy_created_before_a_crash_is_not_created_again_by_the_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its grid orders and the answer commit together: the retry finds the answer, not a second strategy."""
    body = {
        "name": "grid",
        "type": "grid",
        "symbol": "ETH/USDT",
        "config": {"grid_levels": 5, "price_range": [3300, 3700], "quantity_per_level": 0.01},
    }
    async with serving(tmp_path) as (http, runtime):
        key = await full_key(runtime)
        headers = {"X-API-Key": key, "Idempotency-Key": "grid-once"}
        die_after_commit(runtime, monkeypatch)
        with pytest.raises(Died):
            await http.post("/v1/strategies", json=body, headers=headers)
        monkeypatch.undo()

    async with serving(tmp_path) as (http, runtime):
        retry = await http.post("/v1/strategies", json=body, headers=headers)
        assert retry.status_code == 201, retry.text
        assert retry.headers["idempotent-replayed"] == "true"
        listed = await http.get("/v1/strategies", headers={"X-API-Key": key})
        assert listed.json()["total"] == 1
        assert listed.json()["strategies"][0]["id"] == retry.json()["strategy"]["id"]
