"""rt/store/postgres: what only the PostgreSQL twin promises: many instances on one database, an account's write lock
held for every one of them, migrations that run once however many instances start together."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from decimal import Decimal

import asyncpg
import pytest

from rt.errors import BadRequest
from rt.records.events import Event
from rt.records.trading import Book, IdempotencyRecord, Position, StoredResponse, TradeBatch
from rt.store.migrations import load
from rt.store.postgres import PostgresStore


@pytest.fixture
async def instances(pg_url: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    """Two stores on one database, as two rt instances have them."""
    async with AsyncExitStack() as stack:
        one = await PostgresStore.open(pg_url)
        stack.push_async_callback(one.close)
        two = await PostgresStore.open(pg_url)
        stack.push_async_callback(two.close)
        yield one, two


async def waiting_for_advisory_locks(url: str, count: int) -> None:
    """Until `count` sessions on this database wait for an advisory lock, as pg_locks shows them (PostgreSQL announces
    no waits, so this polls, for 10 s at most)."""
    conn = await asyncpg.connect(url)
    try:
        for _ in range(2000):
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            if waiting >= count:
                return
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    raise AssertionError(f"{count} sessions never waited for an advisory lock")


KEEPALIVES = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")


async def new_account(store: PostgresStore, name: str = "alice", balance: Decimal = Decimal(100)) -> str:
    account = await store.create_account(name)
    await store.create_book(Book(account.id, balance))
    return account.id


async def test_lock_returns_the_stored_version_or_minus_one(instances: tuple[PostgresStore, PostgresStore]) -> None:
    one, _ = instances
    account = (await one.create_account("alice")).id
    async with one.writing() as writing:
        assert await writing.lock(account) == -1
    await one.create_book(Book(account, Decimal(5), version=4))
    async with one.writing() as writing:
        assert await writing.lock(account) == 4


async def test_a_second_writing_on_the_account_waits_for_the_first_and_sees_its_version(
    pg_url: str, instances: tuple[PostgresStore, PostgresStore]
) -> None:
    one, two = instances
    account = await new_account(one)
    locked, release = asyncio.Event(), asyncio.Event()
    seen: list[int] = []

    async def first() -> None:
        async with one.writing() as writing:
            seen.append(await writing.lock(account))
            await writing.save(TradeBatch(books=[Book(account, Decimal(90), version=1)]))
            locked.set()
            await release.wait()

    async def second() -> tuple[int, Book | None]:
        async with two.writing() as writing:
            version = await writing.lock(account)
            return version, await writing.load_book(account)

    holder = asyncio.create_task(first())
    try:
        await locked.wait()
        follower = asyncio.create_task(second())
        await waiting_for_advisory_locks(pg_url, 1)
        assert not follower.done()
    finally:
        release.set()
        await holder
    version, book = await follower
    assert (seen, version) == ([0], 1)
    assert book is not None and book.balance == Decimal(90)


async def test_a_held_lock_does_not_hold_other_accounts(instances: tuple[PostgresStore, PostgresStore]) -> None:
    one, two = instances
    held, free = await new_account(one, "held"), await new_account(one, "free")
    async with one.writing() as writing:
        await writing.lock(held)
        async with two.writing() as other:
            assert await asyncio.wait_for(other.lock(free), 5) == 0


async def test_a_writing_that_raises_releases_its_connection(pg_url: str) -> None:
    store = await PostgresStore.open(pg_url, max_size=1)
    try:
        account = await new_account(store)
        with pytest.raises(ZeroDivisionError):
            async with store.writing() as writing:
                await writing.lock(account)
                await writing.save(TradeBatch(books=[Book(account, Decimal(0), version=1)]))
                _ = 1 / 0
        # The pool's one connection is back, out of the transaction and without the lock.
        async with store.writing() as writing:
            assert await asyncio.wait_for(writing.lock(account), 5) == 0
    finally:
        await store.close()


async def test_commands_that_read_while_they_hold_a_writing_never_starve_the_pool(pg_url: str) -> None:
    # More commands at once than the pool has connections, each reading through the store inside its transaction
    # (as an order cancel reads a finished order): with one pool, each held a connection and waited for another.
    store = await PostgresStore.open(pg_url, max_size=2)
    try:
        accounts = [await new_account(store, f"a{i}") for i in range(8)]

        async def command(account: str) -> None:
            async with store.writing() as writing:
                await writing.lock(account)
                await asyncio.sleep(0.01)  # the venue's answer: every command holds its connection meanwhile
                assert await store.get_order(account, "ord_none") is None

        async with asyncio.timeout(20):
            await asyncio.gather(*(command(a) for a in accounts))
    finally:
        await store.close()


async def test_create_book_from_many_instances_at_once_keeps_one(
    instances: tuple[PostgresStore, PostgresStore],
) -> None:
    one, two = instances
    account = (await one.create_account("alice")).id
    await asyncio.gather(*((one, two)[i % 2].create_book(Book(account, Decimal(i))) for i in range(10)))
    books = await one.load_books()
    assert [b.account_id for b in books] == [account]
    assert books[0].balance in {Decimal(i) for i in range(10)}
    assert await two.load_book(account) == books[0]


async def test_instances_opening_a_fresh_database_together_migrate_it_once(pg_url: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(pg_url) for _ in range(4)))
    try:
        await stores[0].create_account("alice")
        assert await stores[3].find_account("alice") is not None
    finally:
        for store in stores:
            await store.close()
    again = await PostgresStore.open(pg_url)
    await again.close()
    conn = await asyncpg.connect(pg_url)
    try:
        applied = await conn.fetch("SELECT version FROM schema_version ORDER BY version")
        accounts = await conn.fetchval("SELECT count(*) FROM accounts")
    finally:
        await conn.close()
    assert [row[0] for row in applied] == [version for version, _ in load("postgres")]
    assert accounts == 1


async def test_an_unreachable_server_fails_the_open() -> None:
    with pytest.raises(OSError):
        await PostgresStore.open("postgresql://postgres@127.0.0.1:1/rt")


async def test_text_with_a_nul_character_is_refused_as_a_bad_request(
    instances: tuple[PostgresStore, PostgresStore],
) -> None:
    one, _ = instances
    with pytest.raises(BadRequest) as caught:
        await one.create_account("a\x00b")
    assert caught.value.status == 400
    account = await new_account(one)
    with pytest.raises(BadRequest):
        async with one.writing() as writing:
            await writing.lock(account)
            await writing.save(
                TradeBatch(
                    positions=[Position("pos_1", account, "paper", "BTC\x00", "long", Decimal(1), Decimal(1), "open")]
                )
            )
    assert await one.count_accounts() == 1
    assert await one.get_position(account, "pos_1") is None


async def test_the_server_drops_a_silent_instances_session_within_half_a_minute(
    instances: tuple[PostgresStore, PostgresStore],
) -> None:
    """Its account locks go with its session: a partitioned instance must not hold them for the OS default of 2 h."""
    one, _ = instances
    async with one.writing() as writing:
        conn = writing._conn
        idle, interval, count = [int(await conn.fetchval(f"SHOW {name}")) for name in KEEPALIVES]
    assert 0 < idle + interval * count <= 30


async def test_the_store_recovers_by_itself_when_the_server_ends_its_connections(pg_url: str) -> None:
    store = await PostgresStore.open(pg_url, max_size=2)
    admin = await asyncpg.connect(pg_url)
    try:
        await store.create_account("before")
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert ended >= 1
        failures: list[BaseException] = []
        for _ in range(3):
            try:
                await store.ping()
                break
            # The first use of a connection whose end asyncpg has not read yet fails: with InternalClientError
            # ("another operation is in progress") when the server's notice arrives in the middle of it.
            except Exception as exc:
                failures.append(exc)
        assert len(failures) <= 1, failures
        await store.create_account("after")
        assert await store.count_accounts() == 2
    finally:
        await admin.close()
        await store.close()


async def test_a_writing_that_raises_keeps_nothing(instances: tuple[PostgresStore, PostgresStore]) -> None:
    """All of a writing or none of it. (The SQLite twin, one writing process, commits each save as it is made.)"""
    store, other = instances
    alice = await new_account(store)
    with pytest.raises(RuntimeError, match="refused"):
        async with store.writing() as writing:
            await writing.lock(alice)
            await writing.save(
                TradeBatch(
                    books=[Book(alice, Decimal(1), version=1)],
                    positions=[Position("pos_1", alice, "paper", "BTC/USDT", "long", Decimal(1), Decimal(1), "open")],
                    events=[Event(alice, "position.opened", {})],
                    responses=[IdempotencyRecord(alice, "k", StoredResponse("print", 201, b"{}"))],
                )
            )
            raise RuntimeError("refused")
    kept = await store.load_book(alice)
    assert kept is not None and (kept.balance, kept.version, kept.positions) == (Decimal(100), 0, {})
    assert await store.get_response(alice, "k") is None
    assert await store.recent_events(10) == []
    # The lock went with the transaction: another instance's writing on the account goes through.
    async with other.writing() as writing:
        assert await asyncio.wait_for(writing.lock(alice), 5) == 0


async def test_a_statement_the_server_never_answers_fails_within_the_command_timeout(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server holds the account's lock for another instance's transaction: a write waiting behind it longer than
    # the command timeout fails (a 503 for its client) instead of hanging for as long as the other one takes.
    import rt.store.postgres as postgres

    monkeypatch.setattr(postgres, "COMMAND_TIMEOUT_S", 0.5)
    store = await PostgresStore.open(pg_url)
    try:
        account = await new_account(store)
        async with store.writing() as holding:
            await holding.lock(account)
            started = asyncio.get_running_loop().time()
            with pytest.raises(TimeoutError):
                async with store.writing() as waiting:
                    await waiting.lock(account)
            assert asyncio.get_running_loop().time() - started < 5
    finally:
        await store.close()
