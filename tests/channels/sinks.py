"""Subscribers for hub tests without a session: each message goes to a function of the test's."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from rt.session import frames
from rt.session.frames import Outgoing

TICKS = ("*", "ticks:BTC/USDT")  # the hub's key of a ticks channel


def tick(seq: int) -> Outgoing:
    return Outgoing(frames.event("ticks:BTC/USDT", seq, "tick", b'{"last":1}'))


class Sink:
    """A subscriber that hands each message to `take`; none of these tests holds more than the limit."""

    def __init__(self, take: Callable[[Outgoing], None]) -> None:
        self.take = take

    def offer(self, out: Outgoing) -> None:
        self.take(out)

    def fell_behind(self) -> None:
        raise AssertionError("within the limit")


def seq_of(out: Outgoing) -> int:
    return int(orjson.loads(out.payload)["seq"])
