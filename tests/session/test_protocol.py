"""rt/session/protocol: parsing client frames, channel scopes and the scope check, without a socket (SPEC §6)."""

from __future__ import annotations

import pytest

from rt.auth import scopes
from rt.errors import BadRequest, Forbidden
from rt.session import frames, protocol
from rt.session.protocol import InvalidMessage, channel_scope, parse, require


def test_a_subscribe_frame_parses_with_every_field() -> None:
    message = parse('{"op": "subscribe", "channel": "positions", "id": "s1", "since": 41}')
    assert (message.op, message.channel, message.id, message.since) == ("subscribe", "positions", "s1", 41)
    assert message.params == {}


def test_a_command_frame_keeps_its_params_and_an_integer_id() -> None:
    raw = b'{"op": "order.place", "id": 7, "params": {"symbol": "BTC/USDT", "quantity": 0.5}}'
    message = parse(raw)
    assert (message.op, message.id) == ("order.place", 7)
    assert message.params == {"symbol": "BTC/USDT", "quantity": 0.5}


def test_an_auth_frame_carries_its_token() -> None:
    assert parse('{"op": "auth", "token": "abc"}').token == "abc"


@pytest.mark.parametrize("raw", ["{", "", "not json", '{"op": "ping"', b"\xff\xfe"])
def test_malformed_json_is_a_bad_request(raw: str | bytes) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse(raw)
    assert caught.value.status == 400 and caught.value.code == "BAD_REQUEST"
    assert "malformed JSON" in caught.value.detail
    assert caught.value.request_id is None


@pytest.mark.parametrize("raw", ["[]", '[{"op": "ping"}]', '"ping"', "42", "null", "true"])
def test_a_frame_that_is_not_an_object_is_refused(raw: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse(raw)
    assert caught.value.code == "BAD_REQUEST"
    assert "JSON object" in caught.value.detail


def test_an_unknown_field_is_refused_naming_it_and_keeping_the_id() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse('{"op": "ping", "id": "p1", "colour": "red"}')
    error = caught.value
    assert error.request_id == "p1"
    assert [e["field"] for e in error.extra["errors"]] == ["colour"]
    problem = error.problem()
    assert (problem["status"], problem["code"]) == (400, "BAD_REQUEST")
    assert problem["errors"][0]["field"] == "colour"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"id": 1}', "op"),
        ('{"op": ""}', "op"),
        ('{"op": "subscribe", "channel": "orders", "since": -1}', "since"),
        ('{"op": "subscribe", "channel": "orders", "since": "yesterday"}', "since"),
        ('{"op": "order.place", "id": 1, "params": [1, 2]}', "params"),
        ('{"op": "ping", "id": {"nested": true}}', "id"),
        ('{"op": "subscribe", "channel": "' + "x" * 61 + '"}', "channel"),
    ],
)
def test_a_field_of_the_wrong_shape_is_named(raw: str, field: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse(raw)
    assert field in {e["field"].split(".")[0] for e in caught.value.extra["errors"]}


def test_an_unusable_id_is_not_echoed() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse('{"op": "ping", "id": [1], "extra": 1}')
    assert caught.value.request_id is None


def test_an_oversize_frame_is_refused_before_it_is_decoded() -> None:
    padding = "x" * protocol.MAX_FRAME
    with pytest.raises(InvalidMessage) as caught:
        parse('{"op": "ping", "id": "' + padding + '"}')
    assert "larger than" in caught.value.detail
    just_fits = '{"op": "ping", "id": "' + "x" * (protocol.MAX_FRAME - 100) + '"}'
    assert parse(just_fits).op == "ping"


@pytest.mark.parametrize(
    ("channel", "scope"),
    [
        ("positions", scopes.POSITIONS_READ),
        ("orders", scopes.ORDERS_READ),
        ("strategies", scopes.STRATEGIES_READ),
        ("risk", scopes.RISK_READ),
        ("account", scopes.ACCOUNT_READ),
        ("events", scopes.ACCOUNT_READ),
        ("ticks:BTC/USDT", scopes.MARKET_READ),
        ("ticks:ETH/USDT", scopes.MARKET_READ),
    ],
)
def test_every_channel_names_its_scope(channel: str, scope: str) -> None:
    assert channel_scope(channel) == scope


@pytest.mark.parametrize("channel", ["ticks:", "ticks", "position", "Orders", "", "trades", "events:all"])
def test_an_unknown_channel_is_a_bad_request_that_lists_the_channels(channel: str) -> None:
    with pytest.raises(BadRequest) as caught:
        channel_scope(channel)
    assert caught.value.code == "BAD_REQUEST"
    assert "positions" in caught.value.detail and "ticks:<SYMBOL>" in caught.value.detail


def test_every_command_needs_the_scope_of_its_rest_twin() -> None:
    assert protocol.COMMAND_SCOPES == {
        "order.place": scopes.ORDERS_WRITE,
        "order.cancel": scopes.ORDERS_WRITE,
        "position.open": scopes.POSITIONS_WRITE,
        "position.close": scopes.POSITIONS_WRITE,
        "position.update": scopes.POSITIONS_WRITE,
        "strategy.start": scopes.STRATEGIES_WRITE,
        "strategy.stop": scopes.STRATEGIES_WRITE,
        "emergency.kill": scopes.RISK_KILL,
        "session.configure": scopes.ORDERS_WRITE,
        "orders.cancel_after": scopes.ORDERS_WRITE,
    }


def test_require_passes_a_granted_scope_and_refuses_a_missing_one() -> None:
    read_only = frozenset(scopes.PRESETS["read-only"])
    require(read_only, scopes.MARKET_READ)
    require(read_only, channel_scope("positions"))
    with pytest.raises(Forbidden) as caught:
        require(read_only, scopes.ORDERS_WRITE)
    problem = caught.value.problem()
    assert (problem["status"], problem["code"]) == (403, "INSUFFICIENT_SCOPE")
    assert problem["required_scope"] == scopes.ORDERS_WRITE
    with pytest.raises(Forbidden):
        require(frozenset(), scopes.MARKET_READ)


def test_a_trade_only_key_may_not_read_positions() -> None:
    trade_only = frozenset(scopes.PRESETS["trade-only"])
    require(trade_only, channel_scope("ticks:BTC/USDT"))
    with pytest.raises(Forbidden):
        require(trade_only, channel_scope("positions"))


def test_an_error_frame_carries_the_problem_and_only_a_real_id() -> None:
    error = Forbidden("this key lacks the orders:write scope", required_scope=scopes.ORDERS_WRITE)
    frame = frames.error_message(error, "c1")
    assert frame["type"] == "error" and frame["id"] == "c1"
    assert frame["error"]["code"] == "INSUFFICIENT_SCOPE" and frame["error"]["status"] == 403
    assert "id" not in frames.error_message(error, None)
    assert frames.error_message(error, 0)["id"] == 0
