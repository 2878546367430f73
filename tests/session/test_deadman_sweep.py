"""The sweeper of the `deadman` role on a real engine and a real Redis: it cancels every open order of an account
whose cancel_after deadline passed, and the orders of a session whose heartbeat ran out, and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from rt.coord.deadman import open_deadman
from rt.coord.memory import MemoryLeases
from rt.coord.roles import Roles
from rt.session.manager import Sessions
from tests.conftest import need_redis
from tests.coord.test_deadman import drop_keys
from tests.engine.conftest import Rig, make_rig, rig

__all__ = ["make_rig", "rig"]

BEAT_MS = 150


@pytest.fixture(params=["memory", "redis"])
async def sessions(request: pytest.FixtureRequest, rig: Rig, redis_prefix: str) -> AsyncIterator[Sessions]:
    """Sessions as rt serve has them, on the rig's engine and the switch's memory or Redis twin."""
    url = await need_redis() if request.param == "redis" else ""
    settings = SimpleNamespace(redis_url=url, redis_prefix=redis_prefix, lease_ttl_ms=3000)
    roles = Roles(MemoryLeases("test"))
    made = Sessions(cast(Any, SimpleNamespace(settings=settings, engine=rig.engine, roles=roles)))
    await made.deadman.close()
    made.deadman = open_deadman(url, redis_prefix, beat_ttl_ms=BEAT_MS)
    try:
        yield made
    finally:
        await made.deadman.close()
        if url:
            await drop_keys(url, redis_prefix)


async def resting(rig: Rig) -> str:
    return (await rig.order("buy", "1", type="limit", price="90")).id


async def status(rig: Rig, order_id: str) -> str:
    stored = await rig.store.get_order(rig.account_id, order_id)
    assert stored is not None
    return stored.status


async def sweep_until_canceled(sessions: Sessions, rig: Rig, order_id: str, within: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while await status(rig, order_id) != "canceled":
        assert asyncio.get_running_loop().time() < deadline, "not canceled"
        await sessions.sweep()
        await asyncio.sleep(0.02)


async def test_a_passed_deadline_cancels_every_open_order_of_the_account_once(sessions: Sessions, rig: Rig) -> None:
    first, second = await resting(rig), await resting(rig)
    other = rig.as_account((await rig.store.create_account("other")).id)
    theirs = await resting(other)
    armed = await sessions.cancel_after(rig.account_id, 1)
    assert armed["timeout_s"] == 1
    await sessions.sweep()
    assert [await status(rig, first), await status(rig, second)] == ["open", "open"]

    await sweep_until_canceled(sessions, rig, first)
    assert await status(rig, second) == "canceled"
    assert await status(other, theirs) == "open"  # another account's deadline was never armed
    assert await sessions.deadman.due() == []  # fired once: a later order is not canceled by it
    later = await resting(rig)
    await sessions.sweep()
    assert await status(rig, later) == "open"


async def test_zero_turns_the_deadline_off(sessions: Sessions, rig: Rig) -> None:
    order = await resting(rig)
    await sessions.cancel_after(rig.account_id, 1)
    assert await sessions.cancel_after(rig.account_id, 0) == {"timeout_s": 0, "trigger_at_ms": None}
    assert await sessions.deadman.due() == []
    await sessions.sweep()
    assert await status(rig, order) == "open"


async def test_a_lapsed_session_has_its_own_orders_canceled_and_a_beaten_one_keeps_them(
    sessions: Sessions, rig: Rig
) -> None:
    mine, kept, elsewhere = await resting(rig), await resting(rig), await resting(rig)
    deadman = sessions.deadman
    await deadman.watch("ses_gone", rig.account_id, [mine])
    await deadman.watch("ses_alive", rig.account_id, [kept])
    deadline = asyncio.get_running_loop().time() + 3
    while await status(rig, mine) != "canceled":
        assert asyncio.get_running_loop().time() < deadline, "not canceled"
        await deadman.beat(["ses_alive"])
        await sessions.sweep()
        await asyncio.sleep(0.02)
    assert [await status(rig, kept), await status(rig, elsewhere)] == ["open", "open"]
    assert await deadman.lapsed() == []  # dealt with, and forgotten


async def test_after_an_outage_lapsed_heartbeats_wait_until_the_holders_could_beat_again(
    sessions: Sessions, rig: Rig
) -> None:
    order = await resting(rig)
    await sessions.deadman.watch("ses_a", rig.account_id, [order])
    await asyncio.sleep(BEAT_MS / 1000 + 0.05)
    sessions.deadman.settled = lambda grace_s: False  # type: ignore[method-assign]
    await sessions.sweep()
    assert await status(rig, order) == "open"
    assert [lapse.session_id for lapse in await sessions.deadman.lapsed()] == ["ses_a"]


async def test_the_sweeper_stops_when_cancelled_even_if_the_store_call_swallows_the_cancellation(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = asyncio.Event()

    async def swallowing_sweep() -> None:
        # What redis-py can do on Python 3.11: a cancellation during a socket write comes back as its own error.
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ConnectionError("Connection closed by server.") from None

    monkeypatch.setattr(sessions, "sweep", swallowing_sweep)
    task = asyncio.create_task(sessions._sweep_forever(1))
    await started.wait()
    task.cancel()
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await task
