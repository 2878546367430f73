"""Webhooks over two real `rt serve` instances on one PostgreSQL and one Redis: every event the store holds for the
account reaches the receiver, one `kill -9` mid-burst costs at most the deliveries that instance had in flight (sent
again by the other), and without a kill no event is delivered twice by instances racing for it."""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import httpx
import orjson
import pytest

from tests.conftest import need_postgres, need_redis
from tests.e2e.cluster import Cluster, cluster
from tests.e2e.receiver import Receiver, Reply, receiving
from tests.e2e.server import cli
from tests.e2e.test_webhooks_e2e import poll, verify

pytestmark = pytest.mark.e2e

CONCURRENCY = 4
ENV = {
    "RT_PAPER_TICK_MS": "200",
    "RT_PAPER_VOLATILITY": "0",
    "RT_PAPER_SYMBOLS": "BTC/USDT=46200,ETH/USDT=3500",
    "RT_TIER_LIMITS": "pro_plus=100000/100000",
    "RT_LOCKOUT_THRESHOLD": "100000",
    "RT_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",
    "RT_WEBHOOK_SCHEDULE": "200ms,400ms,800ms",
    "RT_WEBHOOK_TIMEOUT_S": "2",
    "RT_WEBHOOK_CONCURRENCY": str(CONCURRENCY),
}
ORDER = {"exchange": "paper", "symbol": "BTC/USDT", "type": "market", "quantity": 0.001}
DELIVERED_WITHIN_S = 90.0


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    asyncio.run(need_postgres())
    redis_url = asyncio.run(need_redis())
    with cluster(tmp_path_factory.mktemp("webhooks-cluster"), redis_url, 2, ENV) as running:
        yield running


def new_account(group: Cluster) -> tuple[str, str]:
    data_dir = group.servers[0].data_dir
    made = cli(data_dir, "accounts", "create", f"w-{uuid.uuid4().hex[:10]}", "--json", env=group.env)
    assert made.returncode == 0, made.stderr
    account_id = str(orjson.loads(made.stdout)["id"])
    issued = cli(
        data_dir, "keys", "create", "--account", account_id, "--scopes", "full", "--tier", "pro_plus", "--json",
        env=group.env,
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    return account_id, str(orjson.loads(issued.stdout)["key"])


def query(group: Cluster, sql: str, *args: object) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(group.env["RT_DATABASE_URL"])
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def last_seq(group: Cluster, account_id: str) -> int:
    (row,) = query(group, "SELECT coalesce(max(seq), 0) AS seq FROM events WHERE account_id = $1", account_id)
    return int(row["seq"])


def stored_events(group: Cluster, account_id: str, after: int) -> set[str]:
    rows = query(group, "SELECT id FROM events WHERE account_id = $1 AND seq > $2", account_id, after)
    return {r["id"] for r in rows}


def unfinished(group: Cluster, endpoint_id: str) -> int:
    rows = query(
        group, "SELECT count(*) AS n FROM webhook_deliveries WHERE endpoint_id = $1 AND status <> 'succeeded'",
        endpoint_id,
    )  # fmt: skip
    return int(rows[0]["n"])


def burst(group: Cluster, key: str, orders: int, kill_after: int | None = None) -> int:
    """`orders` market orders from 8 threads, spread over both instances; with `kill_after`, instance 1 gets
    SIGKILL once that many were answered, and the rest go to instance 0. The number answered 201."""
    answered = itertools.count(1)
    killed = threading.Event()
    lock = threading.Lock()
    accepted = 0

    def one(i: int) -> None:
        nonlocal accepted
        index = 0 if killed.is_set() else i % 2
        body = {**ORDER, "side": "buy" if i % 4 < 2 else "sell"}
        try:
            status = httpx.post(
                group.servers[index].url + "/v1/orders", json=body, headers={"X-API-Key": key}, timeout=30
            ).status_code
        except httpx.TransportError:
            assert index == 1 and killed.is_set(), "only the killed instance may fail to answer"
            return
        assert status == 201
        with lock:
            accepted += 1
            if kill_after is not None and next(answered) == kill_after:
                killed.set()
                group.servers[1].process.kill()
                group.servers[1].process.wait()

    with ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(one, i) for i in range(orders)]:
            done.result()
    return accepted


def delivered(
    group: Cluster, receiver: Receiver, account_id: str, endpoint_id: str, after: int, mark: int
) -> tuple[set[str], Counter[str]]:
    """Wait until every delivery of the endpoint succeeded and the receiver holds every stored event after seq
    `after`; the stored ids, and how often each webhook-id arrived since request number `mark`."""

    def complete() -> bool:
        ids = {r.webhook_id for r in receiver.requests()[mark:]}
        return unfinished(group, endpoint_id) == 0 and stored_events(group, account_id, after) <= ids

    poll(complete, bool, DELIVERED_WITHIN_S)
    counts = Counter(r.webhook_id for r in receiver.requests()[mark:])
    return stored_events(group, account_id, after), counts


def test_every_event_arrives_once_except_those_in_flight_at_a_kill(group: Cluster) -> None:
    account_id, key = new_account(group)
    with receiving() as receiver:
        receiver.answer("/hook", then=Reply(delay_s=0.02))
        made = httpx.post(
            group.servers[0].url + "/v1/webhooks",
            json={"url": receiver.url("/hook"), "events": ["*"]},
            headers={"X-API-Key": key},
            timeout=10,
        )
        assert made.status_code == 201, made.text
        endpoint_id, secret = made.json()["id"], made.json()["secret"]

        # Phase 1: one instance killed with SIGKILL mid-burst.
        base = last_seq(group, account_id)
        assert burst(group, key, 120, kill_after=60) >= 60
        stored, counts = delivered(group, receiver, account_id, endpoint_id, base, 0)
        assert stored and set(counts) == stored, "the receiver got exactly the events the store holds"
        duplicates = sum(n - 1 for n in counts.values())
        assert duplicates <= CONCURRENCY, f"{duplicates} duplicates; at most the killed instance's in-flight ones"
        for request in receiver.requests()[:5]:
            verify(request, secret)

        # Phase 2: both instances up, no kill: each event exactly once.
        group.restart(1)
        base, mark = last_seq(group, account_id), len(receiver.requests())
        assert burst(group, key, 80) == 80
        stored, counts = delivered(group, receiver, account_id, endpoint_id, base, mark)
        assert stored and set(counts) == stored
        assert [i for i, n in counts.items() if n > 1] == [], "an event delivered twice without a kill"
