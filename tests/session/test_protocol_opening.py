"""rt/session/protocol: what a first message brings (its token, then what to do), Kraken's subscribe shapes read as
rt subscribes, and close reasons that fit a close frame, without a socket."""

from __future__ import annotations

import orjson
import pytest

from rt.session.protocol import MAX_REASON, NO_TOKEN, InvalidMessage, Message, close_reason, opening, parse


def frame(**message: object) -> bytes:
    return orjson.dumps(message)


@pytest.mark.parametrize(
    ("message", "channel", "request_id"),
    [
        ({"event": "subscribe", "subscription": {"name": "openOrders", "token": "t"}, "reqid": 5}, "orders", 5),
        ({"event": "subscribe", "subscription": {"name": "ownTrades", "token": "t"}}, "orders", None),
        (
            {"method": "subscribe", "params": {"channel": "executions", "token": "t", "snap_orders": True}},
            "orders",
            None,
        ),
        ({"method": "subscribe", "params": {"channel": "balances", "token": "t"}, "req_id": "b"}, "account", "b"),
    ],
    ids=["v1 openOrders", "v1 ownTrades", "v2 executions", "v2 balances"],
)
def test_kraken_subscribes_are_rt_subscribes_to_the_channel_with_the_same_data(
    message: dict[str, object], channel: str, request_id: str | int | None
) -> None:
    parsed = parse(orjson.dumps(message))
    assert (parsed.op, parsed.channel, parsed.token, parsed.id) == ("subscribe", channel, "t", request_id)
    first = opening(orjson.dumps(message))
    assert first.token == "t" and first.then == parsed


def test_a_kraken_request_id_that_is_not_a_string_or_number_is_left_out() -> None:
    raw = frame(event="subscribe", subscription={"name": "openOrders", "token": "t"}, reqid=True)
    assert parse(raw).id is None


def test_a_kraken_channel_rt_does_not_map_keeps_its_token_and_names_the_mapped_ones() -> None:
    raw = frame(method="subscribe", params={"channel": "ticker", "symbol": ["BTC/USD"], "token": "t"}, req_id=9)
    first = opening(raw)
    assert first.token == "t" and isinstance(first.then, InvalidMessage)
    assert first.then.request_id == 9 and first.then.status == 400
    assert "'ticker'" in first.then.detail
    assert all(name in first.then.detail for name in ("openOrders", "ownTrades", "executions", "balances"))
    with pytest.raises(InvalidMessage):
        parse(raw)


def test_rts_auth_and_subscribe_present_their_token() -> None:
    auth = opening(frame(op="auth", token="t"))
    assert (auth.token, auth.then) == ("t", None)
    subscribe = opening(frame(op="subscribe", channel="orders", token="t", id=1))
    assert subscribe.token == "t" and isinstance(subscribe.then, Message) and subscribe.then.channel == "orders"


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"[]",
        b"\xff",
        frame(op="auth", token=123),
        frame(op="auth", token=""),
        frame(op="auth"),
        frame(op="subscribe", channel="orders"),
        frame(op="order.place", id=1, token="t"),
        frame(op="auth", token="t", extra=1),
        frame(event="subscribe", subscription={"name": "openOrders"}),
        frame(event="subscribe", subscription={"name": "openOrders", "token": 5}),
        frame(method="subscribe", params=["executions"]),
        frame(method="subscribe", params={"channel": "ticker"}),
        frame(event="heartbeat"),
    ],
)
def test_a_first_message_without_a_token_presents_none_and_says_what_it_must_be(raw: bytes) -> None:
    first = opening(raw)
    assert first.token is None and first.then is None
    assert first.reason.startswith(NO_TOKEN)
    assert len(first.reason.encode()) <= MAX_REASON


def test_a_close_reason_is_cut_to_a_close_frame_on_a_character_boundary() -> None:
    assert close_reason("short") == "short"
    cut = close_reason("é" * 100)
    assert len(cut.encode()) <= MAX_REASON and cut == "é" * (MAX_REASON // 2)
