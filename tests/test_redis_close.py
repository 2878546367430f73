"""rt/_redis: closing Redis clients never waits on a socket for ever (redis-py waits for its close unbounded)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from rt._redis import close_quietly


class Closing:
    def __init__(self, hangs: bool = False, fails: bool = False) -> None:
        self.hangs, self.fails, self.closed = hangs, fails, False

    async def aclose(self) -> None:
        if self.hangs:
            await asyncio.get_running_loop().create_future()  # as writer.wait_closed() on a close that never ends
        if self.fails:
            raise ConnectionResetError("reset by peer")
        self.closed = True


async def test_a_close_that_hangs_is_let_go_in_time_and_the_next_client_still_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hung, broken, fine = Closing(hangs=True), Closing(fails=True), Closing()
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG, "rt.redis"):
        await close_quietly(hung, broken, fine, within=0.2)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert fine.closed
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "redis connection did not close in time; let go"
    ]


async def test_a_task_cancelled_while_reading_closes_its_clients_and_ends() -> None:
    """The subscribers' shape: the cancellation arrives in a read, the close runs in `finally`."""
    hung, fine = Closing(hangs=True), Closing()

    async def subscriber() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            await close_quietly(hung, fine, within=0.2)

    task = asyncio.create_task(subscriber())
    await asyncio.sleep(0.01)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done and task.cancelled()
    assert fine.closed
