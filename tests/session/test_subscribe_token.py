"""A token in the first `subscribe` against a real `rt serve`, in rt's shape or Kraken's v1 and v2 shapes: it
authenticates the session, which then performs that subscribe; a wrong or spent token is 4001 and counts toward the
IP lockout; a first message carrying no token is 4001 saying so and counts for nothing; later messages may repeat the
session's own token, never bring another."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import websockets

from rt.session.protocol import NO_TOKEN, TOKEN_REFUSED
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


@pytest.fixture(scope="module")
def strict_no_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Three failures lock an address out; a server of its own, not locked by the other tests."""
    env = {**ENV, "RT_LOCKOUT_THRESHOLD": "3", "RT_TRUSTED_PROXIES": ""}
    with run_server(tmp_path_factory.mktemp("subscribe-token-no-token") / "data", env) as started:
        yield started


def kraken_v1(name: str, token: str | None, reqid: int = 1) -> dict[str, Any]:
    subscription = {"name": name} if token is None else {"name": name, "token": token}
    return {"event": "subscribe", "subscription": subscription, "reqid": reqid}


def kraken_v2(channel: str, token: str | None, req_id: int = 1) -> dict[str, Any]:
    params: dict[str, Any] = {"channel": channel, "snapshot": True}
    if token is not None:
        params["token"] = token
    return {"method": "subscribe", "params": params, "req_id": req_id}


async def closed_with(server: Server, first: str | dict[str, Any]) -> tuple[int | None, str]:
    """The close code and reason of a socket opened without `?token=` whose first frame is `first`."""
    async with connect(server) as conn:
        if isinstance(first, str):
            await conn.ws.send(first)
        else:
            await conn.send(**first)
        try:
            while True:
                await conn.recv(10)
        except websockets.ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd is not None else (None, "")


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


@pytest.mark.parametrize(
    ("first", "channel"),
    [(lambda t: kraken_v1("openOrders", t, 42), "orders"), (lambda t: kraken_v1("ownTrades", t, 42), "orders")],
    ids=["openOrders", "ownTrades"],
)
async def test_a_kraken_v1_subscribe_with_its_token_authenticates_and_subscribes_the_rt_channel(
    server: Server, first: Any, channel: str
) -> None:
    token = await ws_token(server, await full_key(server))
    async with connect(server) as conn:
        await conn.send(**first(token))
        subscribed = await conn.next("subscribed", channel=channel)
        snapshot = await conn.recv()
        assert subscribed["id"] == 42 and subscribed["seq"] == 0
        assert snapshot["type"] == "snapshot" and snapshot["data"] == {"orders": []}
        await conn.ping()
    assert await refused_with(server, token) == 4001


async def test_kraken_v2_subscribes_to_executions_and_balances_share_one_session(server: Server) -> None:
    token = await ws_token(server, await full_key(server))
    async with connect(server) as conn:
        await conn.send(**kraken_v2("executions", token, 7))
        assert (await conn.next("subscribed", channel="orders"))["id"] == 7
        # Kraken clients repeat the token in every subscribe: the session's own token, spent, is accepted.
        await conn.send(**kraken_v2("balances", token, 8))
        assert (await conn.next("subscribed", channel="account"))["id"] == 8
        account = await conn.next("snapshot", channel="account")
        assert account["data"]["trading_state"] == "active"
    assert await refused_with(server, None, kraken_v2("executions", token)) == 4001


async def test_a_kraken_channel_rt_does_not_map_is_an_error_and_the_session_stays_authenticated(
    server: Server,
) -> None:
    token = await ws_token(server, await full_key(server))
    async with connect(server) as conn:
        await conn.send(**kraken_v2("ticker", token, 3))
        refused = await conn.next("error", id=3)
        assert refused["error"]["code"] == "BAD_REQUEST"
        detail = refused["error"]["detail"]
        assert "ticker" in detail and all(n in detail for n in ("openOrders", "ownTrades", "executions", "balances"))
        await conn.send(**kraken_v1("book", None, 4))
        assert "book" in (await conn.next("error", id=4))["error"]["detail"]
        subscribed, _ = await conn.subscribe("positions")
        assert subscribed["channel"] == "positions"
    # The token was spent by the first message, which authenticated the session.
    assert await refused_with(server, token) == 4001


async def test_a_kraken_subscribe_with_a_wrong_token_is_refused_as_a_token(server: Server) -> None:
    assert await closed_with(server, kraken_v1("openOrders", "not-a-token")) == (4001, TOKEN_REFUSED)
    assert await closed_with(server, kraken_v2("executions", "not-a-token")) == (4001, TOKEN_REFUSED)


@pytest.mark.parametrize(
    "first",
    [
        "{not json",
        "[1, 2]",
        {"op": "subscribe", "channel": "orders", "token": 123},
        {"op": "auth", "token": ""},
        {"op": "hello", "token": "t"},
        {"op": "ping"},
        kraken_v1("openOrders", None),
        kraken_v2("executions", None),
        {"event": "subscribe", "subscription": "openOrders"},
    ],
    ids=[
        "malformed",
        "not an object",
        "token not a string",
        "empty token",
        "unknown op",
        "ping",
        "kraken v1 without token",
        "kraken v2 without token",
        "kraken without subscription",
    ],
)
async def test_a_first_message_carrying_no_token_is_4001_saying_so(server: Server, first: str | dict[str, Any]) -> None:
    code, reason = await closed_with(server, first)
    assert code == 4001
    assert reason.startswith(NO_TOKEN) and "token invalid" not in reason


async def test_first_messages_without_a_token_do_not_lock_the_address_out_and_spent_tokens_do(
    strict_no_token: Server,
) -> None:
    server = strict_no_token
    for first in ("{", {"op": "auth", "token": 1}, {"op": "nope"}, kraken_v1("openOrders", None), {"op": "ping"}):
        assert (await closed_with(server, first))[0] == 4001
    # Five first messages without a token, over a threshold of three: the address is not locked out.
    token = await ws_token(server, await full_key(server))
    async with connect(server) as conn:
        await conn.send(**kraken_v1("openOrders", token))
        await conn.next("subscribed", channel="orders")
    for _ in range(3):
        assert await closed_with(server, kraken_v2("executions", token)) == (4001, TOKEN_REFUSED)
    with pytest.raises(websockets.InvalidStatus) as denied:
        async with connect(server):
            pass
    assert denied.value.response.status_code == 429
