"""A token in the first `subscribe` (Kraken style) against a real `rt serve`: it authenticates the session, which then
performs that subscribe; a wrong or spent token is 4001 and counts toward the IP lockout; later messages may repeat
the session's own token, never bring another."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import websockets

from tests.e2e.server import Server, run_server
from tests.e2e.test_ws_e2e import ENV, connect, full_key, new_account, refused_with, ws_token

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("subscribe-token") / "data", ENV) as started:
        yield started


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Three failures lock an address out."""
    env = {**ENV, "RT_LOCKOUT_THRESHOLD": "3", "RT_TRUSTED_PROXIES": ""}
    with run_server(tmp_path_factory.mktemp("subscribe-token-strict") / "data", env) as started:
        yield started


async def test_a_token_in_the_first_subscribe_authenticates_and_subscribes(server: Server) -> None:
    token = await ws_token(server, await full_key(server))
    async with connect(server) as conn:
        await conn.send(op="subscribe", channel="positions", id="first", token=token)
        subscribed = await conn.next("subscribed", channel="positions")
        snapshot = await conn.recv()
        assert subscribed["id"] == "first" and subscribed["seq"] == 0
        assert snapshot["type"] == "snapshot" and snapshot["data"] == {"positions": []}
        await conn.ping()
    # The subscribe spent the token.
    assert await refused_with(server, token) == 4001


async def test_a_wrong_token_in_the_first_subscribe_is_4001(server: Server) -> None:
    key = await full_key(server)
    first = {"op": "subscribe", "channel": "orders", "id": 1}
    assert await refused_with(server, None, {**first, "token": "not-a-token"}) == 4001
    assert await refused_with(server, None, {**first, "token": key.key}) == 4001


async def test_a_spent_token_in_the_first_subscribe_is_4001(server: Server) -> None:
    token = await ws_token(server, await full_key(server))
    async with connect(server, token=token) as conn:
        await conn.ping()
    assert await refused_with(server, None, {"op": "subscribe", "channel": "orders", "id": 1, "token": token}) == 4001


async def test_a_token_for_a_channel_the_key_lacks_authenticates_and_refuses_that_channel(server: Server) -> None:
    (key,) = await new_account(server, "orders:read,ws:connect")
    token = await ws_token(server, key)
    async with connect(server) as conn:
        await conn.send(op="subscribe", channel="positions", id="p", token=token)
        refused = await conn.next("error", id="p")
        assert refused["error"]["status"] == 403
        subscribed, _ = await conn.subscribe("orders")
        assert subscribed["channel"] == "orders"


async def test_after_the_token_more_subscribes_work_with_or_without_it(server: Server) -> None:
    token = await ws_token(server, await full_key(server))
    async with connect(server) as conn:
        await conn.send(op="subscribe", channel="positions", id="a", token=token)
        await conn.next("subscribed", channel="positions")
        # Kraken clients repeat the token in every subscribe.
        await conn.send(op="subscribe", channel="orders", id="b", token=token)
        assert (await conn.next("subscribed", channel="orders"))["id"] == "b"
        subscribed, _ = await conn.subscribe("account")
        assert subscribed["channel"] == "account"


async def test_another_token_on_an_authenticated_session_is_refused_and_stays_unspent(server: Server) -> None:
    key = await full_key(server)
    token, other = await ws_token(server, key), await ws_token(server, key)
    async with connect(server, token=token) as conn:
        await conn.send(op="subscribe", channel="orders", id="x", token=other)
        refused = await conn.next("error", id="x")
        assert refused["error"]["code"] == "BAD_REQUEST"
        await conn.ping()
        assert "orders" not in {m.get("channel") for m in conn.messages if m["type"] == "subscribed"}
    async with connect(server) as conn:
        await conn.send(op="subscribe", channel="orders", id="y", token=other)
        assert (await conn.next("subscribed", channel="orders"))["id"] == "y"


async def test_wrong_tokens_in_first_subscribes_lock_the_address_out(strict: Server) -> None:
    for _ in range(3):
        assert await refused_with(strict, None, {"op": "subscribe", "channel": "orders", "token": "wrong"}) == 4001
    with pytest.raises(websockets.InvalidStatus) as denied:
        async with connect(strict):
            pass
    assert denied.value.response.status_code == 429
