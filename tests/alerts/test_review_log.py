"""The hook's log never keeps the passphrase, even one a sender's template put under another spelling of the key."""

from __future__ import annotations

import json
from pathlib import Path

import orjson

from tests.api.test_alerts_api import TEXT, TRADINGVIEW, alerts_api, problem


async def test_a_passphrase_under_a_capitalised_key_is_not_logged(tmp_path: Path) -> None:
    async with alerts_api(tmp_path) as api:
        made = await api.hook()
        for key in ("Passphrase", "PASSPHRASE", " passphrase"):
            sent = orjson.dumps({key: made["passphrase"], **TRADINGVIEW})
            problem(await api.public.post(made["url"], content=sent, headers=TEXT), 401, "ALERT_UNAUTHORIZED")
        log = await api.log(made)
        assert [entry["outcome"] for entry in log] == ["unauthorized"] * 3
        assert all(entry["body"]["symbol"] == TRADINGVIEW["symbol"] for entry in log)
        assert made["passphrase"] not in json.dumps(log)
