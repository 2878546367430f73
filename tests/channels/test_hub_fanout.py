"""The hub's fan-out without sockets: held while subscribing, serialized once, in slices so other work runs
between, in rounds that hand a subscriber what its channel published meanwhile in one turn of the loop, in order,
and bounded."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from rt.bus.memory import MemoryBus
from rt.channels.hub import BACKLOG, SLICE, Hub
from rt.records.events import Delivery, Event
from rt.session.frames import Outgoing
from tests.channels.sinks import TICKS, Sink, seq_of, tick


class Turns:
    """Counts the event loop's turns: one callback a turn, for as long as the test needs."""

    def __init__(self, limit: int = 1000) -> None:
        self.now = 0
        self._limit = limit
        asyncio.get_running_loop().call_soon(self._turn)

    def _turn(self) -> None:
        self.now += 1
        if self.now < self._limit:
            asyncio.get_running_loop().call_soon(self._turn)


async def settle(hub: Hub) -> None:
    for _ in range(1000):
        if not hub.pending:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{hub.pending} deliveries still pending")


async def subscribers(
    stack: contextlib.AsyncExitStack, hub: Hub, count: int, take: Callable[[int, Outgoing], None], channel: str
) -> None:
    for n in range(count):
        sink = Sink(lambda out, n=n: take(n, out))
        (await stack.enter_async_context(hub.subscribe("acct_1", channel, sink))).start(0)


async def test_the_hub_holds_events_while_subscribing_and_hands_on_only_those_past_the_snapshot() -> None:
    hub = Hub(MemoryBus())
    got: list[int] = []

    async with hub.subscribe("acct_1", "ticks:BTC/USDT", Sink(lambda out: got.append(seq_of(out)))) as subscription:
        hub._fan_out(TICKS, 4, tick(4))
        hub._fan_out(TICKS, 5, tick(5))
        assert got == []  # held while the snapshot is built
        subscription.start(4)  # the snapshot covers seq 4
    hub._fan_out(TICKS, 6, tick(6))
    assert got == [5, 6]
    subscription.close()
    hub._fan_out(TICKS, 7, tick(7))
    assert got == [5, 6] and hub.subscriptions() == 0

    with pytest.raises(RuntimeError):
        async with hub.subscribe("acct_1", "orders", Sink(got.append)):
            assert hub.subscriptions() == 1
            raise RuntimeError("the snapshot failed")
    assert hub.subscriptions() == 0  # a subscribe that failed leaves nothing behind
    async with hub.subscribe("acct_1", "orders", Sink(got.append)):
        pass
    assert hub.subscriptions() == 0  # nor one never started


async def test_an_event_going_to_its_channel_and_to_events_is_serialized_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import rt.channels.hub as hub_module

    hub = Hub(MemoryBus())
    got: list[bytes] = []

    calls = 0
    real = hub_module.dumps

    def counting(value: Any) -> bytes:
        nonlocal calls
        calls += 1
        return real(value)

    monkeypatch.setattr(hub_module, "dumps", counting)
    event = Event("acct_1", "order.created", {"id": "ord_1", "price": 10})
    async with contextlib.AsyncExitStack() as stack:
        for channel in ("orders", "events"):
            (
                await stack.enter_async_context(hub.subscribe("acct_1", channel, Sink(lambda o: got.append(o.payload))))
            ).start(0)
        hub.deliver([Delivery("orders", 1, event)])  # the bus hands them on one at a time
        hub.deliver([Delivery("events", 1, event)])
    assert calls == 1
    assert [orjson.loads(p)["channel"] for p in got] == ["orders", "events"]
    assert all(orjson.loads(p)["data"] == {"id": "ord_1", "price": 10} for p in got)


async def test_a_fan_out_to_many_runs_in_slices_so_other_work_runs_between_and_order_holds() -> None:
    from rt.channels.hub import SLICE

    hub = Hub(MemoryBus())
    got: list[list[int]] = [[] for _ in range(SLICE * 3)]

    async with contextlib.AsyncExitStack() as stack:
        for n in range(len(got)):
            (
                await stack.enter_async_context(
                    hub.subscribe("acct_1", "ticks:BTC/USDT", Sink(lambda out, n=n: got[n].append(seq_of(out))))
                )
            ).start(0)
        between: list[int] = []

        async def request() -> None:  # a REST request or a command, ready while the fan-out runs
            between.append(sum(map(len, got)))

        task = asyncio.create_task(request())
        hub._fan_out(TICKS, 1, tick(1))
        hub._fan_out(TICKS, 2, tick(2))
        assert sum(map(len, got)) == SLICE  # one slice now, the rest on the loop's next turns
        await task
        assert between and between[0] < len(got) * 2  # it ran before the fan-out was done
        for _ in range(10):
            await asyncio.sleep(0)
        assert all(seqs == [1, 2] for seqs in got)


async def test_a_command_handed_to_the_loop_runs_before_the_next_slice_which_then_goes_on() -> None:
    hub = Hub(MemoryBus())
    got: list[list[int]] = [[] for _ in range(SLICE * 3)]
    async with contextlib.AsyncExitStack() as stack:
        await subscribers(stack, hub, len(got), lambda n, out: got[n].append(seq_of(out)), TICKS[1])
        hub._fan_out(TICKS, 1, tick(1))
        assert sum(map(len, got)) == SLICE  # the first slice at once, a second one due on the loop's next turn
        seen: list[int] = []

        async def command() -> None:  # started by a client's message after the slice was due
            seen.append(sum(map(len, got)))

        task = asyncio.create_task(command())
        hub.make_way()
        await task
        assert seen == [SLICE]  # no slice ran ahead of it
        await settle(hub)
        assert all(seqs == [1] for seqs in got)
        hub.make_way()  # nothing pending: nothing to wait for, and the next fan-out starts at once
        hub._fan_out(TICKS, 2, tick(2))
        assert sum(map(len, got)) == len(got) + SLICE


async def test_an_unsubscribe_stops_what_its_fan_out_had_still_pending() -> None:
    from rt.channels.hub import SLICE

    hub = Hub(MemoryBus())
    got: list[int] = []

    async with contextlib.AsyncExitStack() as stack:
        for _ in range(SLICE * 2):
            (await stack.enter_async_context(hub.subscribe("acct_1", "ticks:BTC/USDT", Sink(lambda out: None)))).start(
                0
            )
        mine = await stack.enter_async_context(
            hub.subscribe("acct_1", "ticks:BTC/USDT", Sink(lambda out: got.append(seq_of(out))))
        )
        mine.start(0)
        hub._fan_out(TICKS, 1, tick(1))  # the last subscriber's turn comes after two slices
        mine.close()
        for _ in range(5):
            await asyncio.sleep(0)
    assert got == [] and hub.pending == 0


async def test_a_session_that_fails_is_skipped_and_the_fan_out_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    from rt.channels.hub import SLICE

    hub = Hub(MemoryBus())
    got: list[int] = []

    def broken(out: Outgoing) -> None:
        raise RuntimeError("broken session")

    def take(out: Outgoing) -> None:
        got.append(seq_of(out))

    async with contextlib.AsyncExitStack() as stack:
        for n in range(SLICE * 2):
            (
                await stack.enter_async_context(
                    hub.subscribe("acct_1", "ticks:BTC/USDT", Sink(broken if n == 3 else take))
                )
            ).start(0)
        for seq in (1, 2):
            hub._fan_out(TICKS, seq, tick(seq))
        for _ in range(10):
            await asyncio.sleep(0)
    assert sorted(got) == [1] * (SLICE * 2 - 1) + [2] * (SLICE * 2 - 1)
    assert "fan-out to a session failed" in caplog.text


async def test_ticks_published_while_the_fan_out_goes_round_reach_each_subscriber_together_at_its_turn() -> None:
    hub = Hub(MemoryBus())
    got: dict[int, list[tuple[int, int]]] = {}  # subscriber: (turn, seq) of each tick it got

    async with contextlib.AsyncExitStack() as stack:
        turns = Turns()
        await subscribers(
            stack, hub, SLICE * 3, lambda n, out: got.setdefault(n, []).append((turns.now, seq_of(out))), TICKS[1]
        )
        for seq in range(1, 6):  # the first starts the fan-out; the four after it come while it goes round
            hub._fan_out(TICKS, seq, tick(seq))
        await settle(hub)

    assert all([seq for _, seq in ticks] == [1, 2, 3, 4, 5] for ticks in got.values()) and len(got) == SLICE * 3
    for n, ticks in got.items():
        if n < SLICE:  # handed tick 1 at once, 2-5 together when the cursor came round again: one write
            assert len({turn for turn, seq in ticks if seq > 1}) == 1
        else:  # not passed yet when 2-5 came: all five in one turn, no lap waited for
            assert len({turn for turn, _ in ticks}) == 1
    assert max(turn for ticks in got.values() for turn, _ in ticks) <= 4  # one lap (three slices) and one slice


async def test_an_account_keeps_the_order_of_its_events_across_channels_while_ticks_flow() -> None:
    hub = Hub(MemoryBus())
    mine: list[tuple[str, int]] = []
    ticks: list[int] = []

    def record(out: Outgoing) -> None:
        message = orjson.loads(out.payload)
        if message["channel"].startswith("ticks:"):
            ticks.append(message["seq"])
        else:
            mine.append((message["channel"], message["seq"]))

    async with contextlib.AsyncExitStack() as stack:
        await subscribers(stack, hub, SLICE * 3, lambda n, out: None, TICKS[1])
        for channel in ("orders", "events", TICKS[1]):
            (await stack.enter_async_context(hub.subscribe("acct_1", channel, Sink(record)))).start(0)
        published: list[tuple[str, int]] = []
        for seq in range(1, 4):
            hub._fan_out(TICKS, seq, tick(seq))
            for channel in ("orders", "events"):
                event = Event("acct_1", "order.created", {"id": f"ord_{seq}"})
                hub.deliver([Delivery(channel, seq, event)])
                published.append((channel, seq))
            await asyncio.sleep(0)  # a turn of the loop between: rounds are under way
        await settle(hub)

    assert mine == published
    assert ticks == [1, 2, 3]


async def test_one_who_subscribes_while_a_round_runs_starts_with_the_next_tick_and_the_others_keep_their_order() -> (
    None
):
    hub = Hub(MemoryBus())
    got: dict[int, list[int]] = {}
    late: list[int] = []

    async with contextlib.AsyncExitStack() as stack:
        await subscribers(stack, hub, SLICE * 3, lambda n, out: got.setdefault(n, []).append(seq_of(out)), TICKS[1])
        hub._fan_out(TICKS, 1, tick(1))
        hub._fan_out(TICKS, 2, tick(2))  # joins the round's next one
        (
            await stack.enter_async_context(hub.subscribe("acct_2", TICKS[1], Sink(lambda o: late.append(seq_of(o)))))
        ).start(2)
        hub._fan_out(TICKS, 3, tick(3))  # a round of its own, for every subscriber there is now
        hub._fan_out(TICKS, 4, tick(4))
        await settle(hub)
        goner = next(iter(hub._subs[TICKS]))
        hub._fan_out(TICKS, 5, tick(5))
        goner.close()  # while tick 5's round is on its way
        hub._fan_out(TICKS, 6, tick(6))
        await settle(hub)

    assert late == [3, 4, 5, 6]
    assert got[0] == [1, 2, 3, 4, 5]  # the one that left got nothing after it left
    assert all(seqs == [1, 2, 3, 4, 5, 6] for n, seqs in got.items() if n > 0)


async def test_a_publisher_faster_than_the_loop_turns_hands_out_the_oldest_itself() -> None:
    hub = Hub(MemoryBus())
    got: dict[int, list[int]] = {}
    subscribed = SLICE * 4

    async with contextlib.AsyncExitStack() as stack:
        await subscribers(stack, hub, subscribed, lambda n, out: got.setdefault(n, []).append(seq_of(out)), TICKS[1])
        for seq in range(1, 1001):  # never a turn of the loop between
            hub._fan_out(TICKS, seq, tick(seq))
            # At most BACKLOG ticks wait for a subscriber, not 1,000.
            assert len(hub._ticking[TICKS].log) <= BACKLOG
        await settle(hub)
    assert all(seqs == list(range(1, 1001)) for seqs in got.values()) and len(got) == subscribed


async def test_fan_outs_to_many_accounts_behind_a_tick_round_are_bounded_and_all_arrive() -> None:
    hub = Hub(MemoryBus())
    got: list[str] = []

    async with contextlib.AsyncExitStack() as stack:
        await subscribers(stack, hub, SLICE * 4, lambda n, out: None, TICKS[1])
        for n in range(2000):
            sink = Sink(lambda out: got.append(orjson.loads(out.payload)["data"]["id"]))
            (await stack.enter_async_context(hub.subscribe(f"acct_{n}", "orders", sink))).start(0)
        hub._fan_out(TICKS, 1, tick(1))
        for n in range(2000):  # one event for each account, while the tick's round is pending
            hub.deliver([Delivery("orders", 1, Event(f"acct_{n}", "order.created", {"id": f"ord_{n}"}))])
            assert len(hub._pending) <= BACKLOG
        await settle(hub)
    assert got == [f"ord_{n}" for n in range(2000)]
