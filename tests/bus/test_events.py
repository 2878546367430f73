"""rt/bus: the catalogue of event names. Every event the code emits is in it, each routes to its channel, and the
names say what happened (no `risk.limit_reached` for things that are not a limit being reached)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from rt.api import asyncapi
from rt.records.events import EVENTS, EVENTS_CHANNEL, channel_of

RT = Path(__file__).resolve().parents[2] / "rt"
NAME = re.compile(r"^[a-z]+\.[a-z_]+$")
# How the code emits an event: Changes.event(name, data), Changes.position(p, name), Changes.order(o, name),
# the strategy runner's _changed(record, name) and Event(account, name, data).
EMITTERS = {"event": 0, "position": 1, "order": 1, "_changed": 1, "Event": 1}


def emitted() -> dict[str, list[str]]:
    """Event names passed as literals to an emitter, with where."""
    found: dict[str, list[str]] = {}
    for path in RT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            at = EMITTERS.get(name)
            if at is None or len(node.args) <= at:
                continue
            arg = node.args[at]
            candidates = [arg.body, arg.orelse] if isinstance(arg, ast.IfExp) else [arg]
            for candidate in candidates:
                if (
                    isinstance(candidate, ast.Constant)
                    and isinstance(candidate.value, str)
                    and NAME.match(candidate.value)
                ):
                    found.setdefault(candidate.value, []).append(f"{path.relative_to(RT)}:{node.lineno}")
    return found


def test_every_emitted_event_is_catalogued() -> None:
    found = emitted()
    assert {"position.canceled", "risk.unlocked", "risk.envelope_updated", "risk.limit_reached"} <= set(found)
    unknown = {name: where for name, where in found.items() if name not in EVENTS}
    assert not unknown, f"events emitted but not in rt.records.events.EVENTS (AsyncAPI, docs/protocol.md): {unknown}"


def test_the_trading_state_and_envelope_events_go_to_risk_and_a_canceled_entry_to_positions() -> None:
    assert channel_of("risk.unlocked") == channel_of("risk.envelope_updated") == "risk"
    assert channel_of("position.canceled") == "positions"
    # Alerts and webhook endpoints have no channel of their own: their events are on `events` (and webhooks) alone.
    for name in EVENTS:
        if name.split(".")[0] in ("alert", "webhook"):
            assert channel_of(name) == EVENTS_CHANNEL
        else:
            assert channel_of(name) != EVENTS_CHANNEL, f"{name} would only reach the events channel"


def test_asyncapi_lists_each_channels_events_from_the_catalogue() -> None:
    document = asyncapi.build()
    subscriptions = document["x-subscriptions"]
    for name in EVENTS:
        assert name in subscriptions[channel_of(name)]["events"]
        assert name in subscriptions[EVENTS_CHANNEL]["events"]
        assert document["x-events"][name] == {"channel": channel_of(name), "description": EVENTS[name]}
    assert subscriptions["positions"]["events"] == [n for n in EVENTS if n.startswith("position.")]
