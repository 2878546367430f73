"""rt/api/alerts and rt/alerts/desk in process: hooks are the caller's account's own, and an alert goes through the
lockout, the passphrase, the allowlist, the rate, the parse, dedupe and Cerberus to at most one order, each step
written to the hook's log without the passphrase."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from rt.app import create_app
from rt.config import Settings
from rt.runtime import Runtime

TRADINGVIEW = {"symbol": "BINANCE:BTCUSDT", "action": "BUY", "quantity": "0.01", "ticker": "BTCUSDT"}
TEXT = {"Content-Type": "text/plain; charset=utf-8"}
SENDER_IP = "203.0.113.50"


@dataclass
class Api:
    runtime: Runtime
    http: httpx.AsyncClient
    public: httpx.AsyncClient
    other: httpx.AsyncClient
    app: Any

    async def hook(self, **fields: Any) -> dict[str, Any]:
        response = await self.http.post("/v1/alert-hooks", json={"max_quantity": 0.05, **fields})
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def alert(self, hook: dict[str, Any], body: dict[str, Any], **kwargs: Any) -> httpx.Response:
        message = {"passphrase": hook["passphrase"], **body}
        return await self.public.post(hook["url"], content=orjson.dumps(message), headers=TEXT, **kwargs)

    async def orders(self) -> list[dict[str, Any]]:
        return list((await self.http.get("/v1/orders")).json()["orders"])

    async def log(self, hook: dict[str, Any]) -> list[dict[str, Any]]:
        response = await self.http.get(f"/v1/alert-hooks/{hook['id']}/log")
        assert response.status_code == 200, response.text
        return list(response.json()["alerts"])


@contextlib.asynccontextmanager
async def alerts_api(data_dir: Path, **settings: Any) -> AsyncIterator[Api]:
    app = create_app(Settings(data_dir=str(data_dir), bootstrap=False, paper_tick_ms=0, paper_seed=1, **settings))
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        account = await runtime.keys.create_account("desk")
        admin = await runtime.keys.create(account.id, "full", "pro_plus")
        stranger = await runtime.keys.create((await runtime.keys.create_account("other")).id, "full", "pro_plus")
        transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 40000))
        sender = httpx.ASGITransport(app=app, client=(SENDER_IP, 40000))
        base = "http://rt.test"
        async with (
            httpx.AsyncClient(transport=transport, base_url=base, headers={"X-API-Key": admin.key}) as http,
            httpx.AsyncClient(transport=sender, base_url=base) as public,
            httpx.AsyncClient(transport=transport, base_url=base, headers={"X-API-Key": stranger.key}) as other,
        ):
            yield Api(runtime, http, public, other, app)


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = dict(response.json())
    assert body["code"] == code, body
    return body


async def test_a_hook_is_created_with_its_passphrase_once_and_read_without_it(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        made = await api.hook(
            name="tv", symbols=["BINANCE:BTCUSDT", "eth/usdt"], defaults={"quantity": "0.01"}, allow_ips="10.0.0.0/8"
        )
        assert made["id"].startswith("alh_") and made["url"] == f"/v1/alerts/{made['id']}"
        assert len(made["passphrase"]) == 32 and made["passphrase"].isalnum()
        assert made["symbols"] == ["BTC/USDT", "ETH/USDT"] and made["allow_ips"] == ["10.0.0.0/8"]
        assert made["defaults"] == {"type": "market", "quantity": 0.01, "exchange": "paper"}
        assert made["max_quantity"] == 0.05 and made["created_at"].endswith("Z")
        shown = {k: v for k, v in made.items() if k != "passphrase"}
        assert (await api.http.get(made["url"].replace("/alerts/", "/alert-hooks/"))).json() == shown
        listing = (await api.http.get("/v1/alert-hooks")).json()
        assert listing == {"alert_hooks": [shown], "total": 1, "page": 1}
        stored = await api.runtime.store.get_hook(made["id"])
        assert stored is not None and made["passphrase"] not in repr(stored)


async def test_another_account_can_neither_see_nor_delete_a_hook(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        made = await api.hook()
        path = f"/v1/alert-hooks/{made['id']}"
        problem(await api.other.get(path), 404, "NOT_FOUND")
        problem(await api.other.get(path + "/log"), 404, "NOT_FOUND")
        problem(await api.other.delete(path), 404, "NOT_FOUND")
        assert (await api.other.get("/v1/alert-hooks")).json()["total"] == 0
        assert (await api.http.delete(path)).json() == {"id": made["id"], "deleted": True}
        problem(await api.http.get(path), 404, "NOT_FOUND")
        problem(await api.http.delete(path), 404, "NOT_FOUND")
        problem(await api.alert(made, TRADINGVIEW), 401, "ALERT_UNAUTHORIZED")


async def test_hook_fields_are_checked_and_an_account_has_at_most_20(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        bad = await api.http.post("/v1/alert-hooks", json={"max_quantity": 0})
        assert problem(bad, 400, "BAD_REQUEST")["errors"][0]["field"] == "max_quantity"
        bad = await api.http.post("/v1/alert-hooks", json={"max_quantity": 1, "symbols": ["BTCUSDT", "??"]})
        assert problem(bad, 400, "BAD_REQUEST")["errors"][0]["field"] == "symbols.1"
        bad = await api.http.post("/v1/alert-hooks", json={"max_quantity": 1, "defaults": {"quantity": 2}})
        assert problem(bad, 400, "BAD_REQUEST")["errors"][0]["field"] == "defaults.quantity"
        bad = await api.http.post("/v1/alert-hooks", json={"max_quantity": 1, "allow_ips": "not-an-ip"})
        assert problem(bad, 400, "BAD_REQUEST")["errors"][0]["field"] == "allow_ips"
        for _ in range(20):
            await api.hook()
        problem(await api.http.post("/v1/alert-hooks", json={"max_quantity": 1}), 409, "ALERT_HOOK_LIMIT_REACHED")


async def test_a_tradingview_body_sent_as_text_plain_places_one_order(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        made = await api.hook()
        response = await api.alert(made, TRADINGVIEW)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["status"] == "executed" and answer["alert_id"].startswith("alr_")
        (order,) = await api.orders()
        assert answer["order_id"] == order["id"] and answer["order_ids"] == [order["id"]]
        assert (order["symbol"], order["side"], order["quantity"], order["status"]) == (
            "BTC/USDT",
            "buy",
            0.01,
            "filled",
        )
        (entry,) = await api.log(made)
        assert (entry["outcome"], entry["order_ids"], entry["ip"]) == ("executed", [order["id"]], SENDER_IP)
        assert entry["body"] == TRADINGVIEW and entry["id"] == answer["alert_id"]


async def test_the_hooks_symbols_and_max_quantity_refuse_as_cerberus_does(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        made = await api.hook(symbols=["ETHUSDT"])
        refused = problem(await api.alert(made, TRADINGVIEW), 422, "VALIDATION_FAILED")
        assert refused["details"] == {
            "check": "alert_symbols",
            "reason": "BTC/USDT is not one of the hook's symbols",
            "limit": ["ETH/USDT"],
            "requested": "BTC/USDT",
        }
        over = {"symbol": "ETHUSDT", "action": "sell", "quantity": 0.06}
        refused = problem(await api.alert(made, over), 422, "VALIDATION_FAILED")
        assert refused["details"]["check"] == "alert_max_quantity"
        assert (refused["details"]["limit"], refused["details"]["requested"]) == (0.05, 0.06)
        assert await api.orders() == []
        log = await api.log(made)
        assert [(e["outcome"], e["code"]) for e in log] == [("rejected", "VALIDATION_FAILED")] * 2


async def test_cerberus_refuses_an_alert_over_max_position_size_and_a_locked_account_with_423(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        made = await api.hook(max_quantity=10)
        big = {**TRADINGVIEW, "quantity": "1"}  # 1 BTC at 65000 is over the 25000 max_position_size
        refused = problem(await api.alert(made, big), 422, "VALIDATION_FAILED")
        assert refused["details"]["check"] == "position_size"
        assert (await api.http.get("/v1/positions")).json()["positions"] == []
        assert (await api.http.post("/v1/risk/kill", json={"action": "LOCK"})).status_code == 200
        problem(await api.alert(made, TRADINGVIEW), 423, "TRADING_LOCKED")
        assert (await api.http.get("/v1/positions")).json()["positions"] == []
        assert [e["code"] for e in await api.log(made)] == ["TRADING_LOCKED", "VALIDATION_FAILED"]


async def test_the_same_id_twice_trades_once_and_replays_the_first_answer(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        made = await api.hook()
        body = {**TRADINGVIEW, "id": "strategy-7-entry"}
        first = await api.alert(made, body)
        again = await api.alert(made, {**body, "time": "later"})  # same id, but extras differ: not the same body
        assert again.status_code == 409 and again.json()["code"] == "IDEMPOTENCY_CONFLICT"
        repeat = await api.alert(made, body)
        assert first.status_code == repeat.status_code == 202
        assert repeat.content == first.content and repeat.headers["idempotent-replayed"] == "true"
        assert len(await api.orders()) == 1
        outcomes = [e["outcome"] for e in await api.log(made)]
        assert outcomes == ["duplicate", "rejected", "executed"]


async def test_the_same_body_without_an_id_trades_once_within_the_window_and_again_after_it(tmp_path: Path) -> None:
    async with alerts_api(tmp_path, alert_dedupe_s=60) as api:
        made = await api.hook()
        at = [1_000_000.0]
        api.runtime.alerts.clock = lambda: at[0]
        first = await api.alert(made, TRADINGVIEW)
        at[0] += 59  # the next window: the previous one is looked up too
        repeat = await api.alert(made, TRADINGVIEW)
        assert repeat.status_code == 202 and repeat.content == first.content
        assert len(await api.orders()) == 1
        at[0] += 121
        later = await api.alert(made, TRADINGVIEW)
        assert later.status_code == 202 and later.json()["order_id"] != first.json()["order_id"]
        assert len(await api.orders()) == 2
        assert [e["outcome"] for e in await api.log(made)] == ["executed", "duplicate", "executed"]


async def test_a_wrong_passphrase_and_an_unknown_hook_answer_alike_and_lock_the_ip_out(tmp_path: Path) -> None:
    async with alerts_api(tmp_path, lockout_threshold=3) as api:
        made = await api.hook()
        wrong = await api.alert({**made, "passphrase": "x" * 32}, TRADINGVIEW)
        unknown = await api.alert({**made, "url": "/v1/alerts/alh_00000000000000000000"}, TRADINGVIEW)
        for response in (wrong, unknown):
            problem(response, 401, "ALERT_UNAUTHORIZED")
        strip = ("instance",)
        assert {k: v for k, v in wrong.json().items() if k not in strip} == {
            k: v for k, v in unknown.json().items() if k not in strip
        }
        assert wrong.json()["detail"] == "the hook or its passphrase is not valid"
        locked = await api.alert({**made, "passphrase": ""}, TRADINGVIEW)
        assert problem(locked, 429, "IP_LOCKED_OUT") and int(locked.headers["retry-after"]) > 0
        problem(await api.alert(made, TRADINGVIEW), 429, "IP_LOCKED_OUT")  # even the right passphrase, for a while
        assert await api.orders() == []
        log = await api.log(made)
        assert [(e["outcome"], e["code"]) for e in log] == [("unauthorized", "ALERT_UNAUTHORIZED")] * 2
        assert (await api.http.get("/v1/account")).status_code == 200  # another address is not locked out
        await api.runtime.audit.flush()
        account_id = (await api.runtime.store.get_hook(made["id"])).account_id  # type: ignore[union-attr]
        failures = [e for e in await api.runtime.store.list_audit(account_id) if e.action == "auth.failed"]
        assert [(e.ip, e.detail["code"]) for e in failures] == [(SENDER_IP, "ALERT_UNAUTHORIZED")] * 2


async def test_allow_ips_refuses_other_addresses(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        made = await api.hook(allow_ips=["52.89.214.238", "34.212.75.30"])
        problem(await api.alert(made, TRADINGVIEW), 403, "IP_NOT_ALLOWED")
        allowed = httpx.ASGITransport(app=api.app, client=("52.89.214.238", 443))
        async with httpx.AsyncClient(transport=allowed, base_url="http://rt.test") as tradingview:
            message = orjson.dumps({"passphrase": made["passphrase"], **TRADINGVIEW})
            response = await tradingview.post(made["url"], content=message, headers=TEXT)
        assert response.status_code == 202, response.text
        log = await api.log(made)
        assert [(e["outcome"], e["ip"]) for e in log] == [
            ("executed", "52.89.214.238"),
            ("unauthorized", SENDER_IP),
        ]


async def test_a_bad_body_is_a_400_naming_the_field_and_the_log_never_holds_the_passphrase(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        made = await api.hook()
        bad = await api.alert(made, {**TRADINGVIEW, "action": "hodl"})
        assert problem(bad, 400, "BAD_REQUEST")["errors"][0]["field"] == "action"
        no_quantity = await api.alert(made, {"symbol": "BTCUSDT", "action": "sell"})
        assert problem(no_quantity, 400, "BAD_REQUEST")["errors"][0]["field"] == "quantity"
        malformed = await api.public.post(made["url"], content=b"{not json", headers=TEXT)
        problem(malformed, 400, "BAD_REQUEST")
        await api.alert({**made, "passphrase": "wrong"}, TRADINGVIEW)
        await api.alert(made, TRADINGVIEW)
        log = await api.log(made)
        assert sorted(e["outcome"] for e in log) == ["executed", "rejected", "rejected", "unauthorized"]
        assert all("passphrase" not in e["body"] for e in log)
        assert made["passphrase"] not in (await api.http.get(f"/v1/alert-hooks/{made['id']}/log")).text


async def test_close_and_flat_close_the_symbols_positions_and_flat_cancels_its_orders(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        made = await api.hook()
        for _ in range(2):
            assert (await api.alert(made, {**TRADINGVIEW, "time": str(_)})).status_code == 202
        resting = {"symbol": "BTC/USDT", "side": "buy", "type": "limit", "quantity": 0.01, "price": 30000}
        assert (await api.http.post("/v1/orders", json=resting)).status_code == 201
        closed = await api.alert(made, {"symbol": "BTCUSDT", "action": "close"})
        assert closed.status_code == 202, closed.text
        assert len(closed.json()["order_ids"]) == 2  # one close order per open position
        assert (await api.http.get("/v1/positions")).json()["positions"] == []
        assert len((await api.http.get("/v1/orders", params={"status": "open"})).json()["orders"]) == 1
        flat = await api.alert(made, {"symbol": "BTCUSDT", "action": "FLAT"})
        assert flat.status_code == 202 and flat.json() == {**flat.json(), "order_id": None, "order_ids": []}
        assert (await api.http.get("/v1/orders", params={"status": "open"})).json()["orders"] == []
