"""rt/client/rest: a Client over several URLs moves on when an instance refuses or dies, resends only what is safe to
resend, and sends an Idempotency-Key with every trading write so a resent write trades once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest

from rt.client import ApiError, Client

KEY = "rt_live_" + "0" * 32
A, B, C = "http://a:8080", "http://b:8080", "http://c:8080"
ORDER = {"id": "ord_1", "status": "filled"}


class Fleet:
    """A MockTransport standing in for instances: each host is up, refuses connections, or dies mid-request."""

    def __init__(self, **state: str) -> None:
        self.state = state  # host -> "up" | "refuses" | "dies" | "slow"
        self.seen: list[httpx.Request] = []

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def hosts(self) -> list[str]:
        return [r.url.host for r in self.seen]

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        state = self.state.get(request.url.host, "up")
        if state == "refuses":
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if state == "dies":
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        if state == "slow":
            raise httpx.ReadTimeout("timed out", request=request)
        if request.url.path == "/v1/orders" and request.method == "POST":
            return httpx.Response(201, json={"order": ORDER})
        if request.url.path == "/v1/ws/token":
            return httpx.Response(200, json={"token": f"t-{request.url.host}", "expires": 900})
        if request.url.path == "/v1/positions/pos_9":
            return httpx.Response(404, json={"code": "NOT_FOUND", "detail": "no such position"})
        # One body that every call of the SDK can read its answer from.
        return httpx.Response(200, json={"balance": 100000, "host": request.url.host, "order": ORDER, "position": {}})


def client(fleet: Fleet, *urls: str) -> Client:
    return Client(list(urls), KEY, transport=fleet.transport())


async def test_one_url_works_as_before_and_is_named_by_any_form() -> None:
    fleet = Fleet()
    for made in (
        Client(A + "/", KEY, transport=fleet.transport()),
        Client([A], KEY, transport=fleet.transport()),
        Client(urls=[A], api_key=KEY, transport=fleet.transport()),
    ):
        async with made:
            assert made.urls == (A,) and made.base_url == A
            assert (await made.account())["host"] == "a"
    assert [r.headers["x-api-key"] for r in fleet.seen] == [KEY] * 3


@pytest.mark.parametrize(
    "make",
    [
        lambda: Client(None, KEY),
        lambda: Client([], KEY),
        lambda: Client(A, None),
        lambda: Client(A, KEY, urls=[B]),
    ],
    ids=["no-url", "empty-list", "no-key", "both-forms"],
)
def test_a_client_needs_urls_given_once_and_a_key(make: Callable[[], Client]) -> None:
    with pytest.raises(ValueError):
        make()


async def test_a_read_moves_on_from_an_instance_that_refuses_and_stays_on_the_next() -> None:
    fleet = Fleet(a="refuses")
    async with client(fleet, A, B, C) as rt:
        assert (await rt.account())["host"] == "b"
        assert rt.base_url == B
        assert (await rt.account())["host"] == "b"
    assert fleet.hosts() == ["a", "b", "b"]


@pytest.mark.parametrize("failure", ["dies", "slow"])
async def test_a_read_is_sent_again_elsewhere_when_an_instance_fails_mid_request(failure: str) -> None:
    fleet = Fleet(a=failure)
    async with client(fleet, A, B) as rt:
        assert (await rt.account())["host"] == "b"
    assert fleet.hosts() == ["a", "b"]


async def test_an_order_sent_again_after_an_instance_died_with_it_carries_the_same_idempotency_key() -> None:
    fleet = Fleet(a="dies")
    async with client(fleet, A, B) as rt:
        assert await rt.place_order(symbol="BTC/USDT", side="buy", quantity=0.01) == ORDER
        assert await rt.place_order(symbol="BTC/USDT", side="buy", quantity=0.01, idempotency_key="k-1") == ORDER
    first, second, third = fleet.seen
    assert (first.url.host, second.url.host, third.url.host) == ("a", "b", "b")
    generated = first.headers["idempotency-key"]
    assert generated.startswith("sdk-") and second.headers["idempotency-key"] == generated
    assert third.headers["idempotency-key"] == "k-1"
    assert first.content == second.content


async def test_every_trading_write_carries_a_fresh_key_unless_the_order_carries_client_order_id() -> None:
    fleet = Fleet()
    async with client(fleet, A) as rt:
        await rt.place_order(symbol="BTC/USDT", side="buy", quantity=0.01)
        await rt.place_order(symbol="BTC/USDT", side="buy", quantity=0.01)
        await rt.cancel_order("ord_1")
        await rt.close_position("pos_1")
        await rt.open_position(symbol="BTC/USDT", side="long", quantity=0.01)
        await rt.set_envelope(max_exposure=1)
        await rt.kill("test")
        await rt.risk_command("UNLOCK")
        await rt.place_order(symbol="BTC/USDT", side="buy", quantity=0.01, client_order_id="bot-1")
    keys = [r.headers.get("idempotency-key") for r in fleet.seen]
    assert all(keys[:-1]) and len(set(keys[:-1])) == len(keys) - 1
    # A header would override the body's own key: the server dedupes on client_order_id alone.
    assert keys[-1] is None


async def test_an_order_by_client_order_id_is_sent_again_elsewhere() -> None:
    fleet = Fleet(a="dies")
    async with client(fleet, A, B) as rt:
        await rt.place_order(symbol="BTC/USDT", side="buy", quantity=0.01, client_order_id="bot-2")
    assert fleet.hosts() == ["a", "b"]


async def test_a_write_without_a_key_is_not_sent_again_once_it_may_have_arrived() -> None:
    fleet = Fleet(a="dies")
    async with client(fleet, A, B) as rt:
        with pytest.raises(httpx.RemoteProtocolError):
            await rt.request("POST", "/v1/keys", json={"scopes": "read"})
        assert rt.base_url == B  # the next call goes elsewhere
    assert fleet.hosts() == ["a"]


async def test_a_write_without_a_key_is_sent_again_when_it_never_left() -> None:
    fleet = Fleet(a="refuses")
    async with client(fleet, A, B) as rt:
        await rt.request("POST", "/v1/keys", json={"scopes": "read"})
    assert fleet.hosts() == ["a", "b"]


async def test_when_every_instance_fails_each_is_tried_once_and_the_last_failure_is_raised() -> None:
    fleet = Fleet(a="refuses", b="dies", c="refuses")
    async with client(fleet, B, C, A) as rt:
        with pytest.raises(httpx.ConnectError) as raised:
            await rt.account()
        assert raised.value.request.url.host == "a"
        assert rt.base_url == B  # moved on from each: round again
    assert fleet.hosts() == ["b", "c", "a"]


async def test_a_problem_answer_is_an_api_error_and_does_not_move_on() -> None:
    fleet = Fleet()
    async with client(fleet, A, B) as rt:
        with pytest.raises(ApiError) as raised:
            await rt.position("pos_9")
        assert (raised.value.status, raised.value.code) == (404, "NOT_FOUND")
        assert rt.base_url == A
    assert fleet.hosts() == ["a"]


async def test_calls_failing_together_on_one_instance_move_on_once() -> None:
    fleet = Fleet(a="refuses")
    async with client(fleet, A, B, C) as rt:
        answers = await asyncio.gather(*(rt.account() for _ in range(5)))
        assert {a["host"] for a in answers} == {"b"}
        assert rt.base_url == B
    assert "c" not in fleet.hosts()


async def test_a_token_asked_at_one_url_is_asked_there_alone() -> None:
    fleet = Fleet(a="refuses")
    async with client(fleet, A, B) as rt:
        with pytest.raises(httpx.ConnectError):
            await rt.ws_token(at=A)
        assert rt.base_url == A  # `at` is the caller's choice: it does not move the client
        assert await rt.ws_token(at=B) == "t-b"
        assert await rt.ws_token() == "t-b"  # not at: moves on like a read
    assert fleet.hosts() == ["a", "b", "a", "b"]
