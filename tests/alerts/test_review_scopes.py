"""A hook trades on its own passphrase, so making one hands out trading: a key without orders:write cannot make one
(as a key cannot issue a key with scopes it lacks), and its alerts would never reach an order."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.api.test_alerts_api import TEXT, TRADINGVIEW, alerts_api, problem


async def test_a_key_that_may_not_trade_cannot_make_a_hook_that_trades(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        account_id = next(a.id for a in await api.runtime.store.list_accounts() if a.name == "desk")
        hooks_only = await api.runtime.keys.create(account_id, "alerts:manage,orders:read", "pro_plus")
        transport = httpx.ASGITransport(app=api.app, client=("198.51.100.8", 40000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://rt.test", headers={"X-API-Key": hooks_only.key}
        ) as limited:
            refused = await limited.post("/v1/alert-hooks", json={"max_quantity": 0.05})
            assert "orders:write" in problem(refused, 403, "INSUFFICIENT_SCOPE")["detail"]
            assert (await api.http.get("/v1/alert-hooks")).json()["total"] == 0
            assert (await limited.get("/v1/alert-hooks")).json()["total"] == 0

        made = await api.hook()  # the full key may
        accepted = await api.public.post(
            made["url"], json={"passphrase": made["passphrase"], **TRADINGVIEW}, headers=TEXT
        )
        assert accepted.status_code == 202, accepted.text
