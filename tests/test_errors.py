"""rt.errors.outage(): which errors mean PostgreSQL or Redis is unreachable (503, retry) rather than a bug (500)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import asyncpg.exceptions as pg
import pytest
import redis.exceptions as rd

from rt.errors import SERVICE_UNAVAILABLE, outage
from tests.conftest import need_postgres
from tests.pg import database


@pytest.mark.parametrize(
    ("error", "service"),
    [
        (pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), "PostgreSQL"),
        (pg.PostgresConnectionError("connection failure"), "PostgreSQL"),
        (pg.InterfaceError("connection is closed"), "PostgreSQL"),
        (pg.InterfaceError("cannot perform operation: connection is closed"), "PostgreSQL"),
        (pg.InterfaceError("cannot call PreparedStatement.fetch(): the underlying connection is closed"), "PostgreSQL"),
        (pg.InterfaceError("pool is closed"), "PostgreSQL"),
        # The first query on a pooled connection whose server has just ended it (its farewell read, not yet its EOF).
        (pg.InternalClientError("cannot switch to state 11; another operation (2) is in progress"), "PostgreSQL"),
        (pg.InternalClientError('cannot switch to state 11; protocol is in the "failed" state'), "PostgreSQL"),
        (pg.InternalClientError("not connected"), "PostgreSQL"),
        (
            pg.TargetServerAttributeNotMatched('None of the hosts match the target attribute requirement "primary"'),
            "PostgreSQL",
        ),
        (pg.AdminShutdownError("terminating connection due to administrator command"), "PostgreSQL"),
        (pg.TooManyConnectionsError("sorry, too many clients already"), "PostgreSQL"),
        (rd.ConnectionError("Connection closed by server."), "Redis"),
        (rd.TimeoutError("Timeout reading from socket"), "Redis"),
        (ConnectionRefusedError(111, "Connection refused"), "a service rt depends on"),
        (TimeoutError(), "a service rt depends on"),
    ],
)
def test_a_lost_connection_is_503_with_retry_after_naming_the_service(error: Exception, service: str) -> None:
    unavailable = outage(error)
    assert unavailable is not None
    assert unavailable.status == 503 and unavailable.code == SERVICE_UNAVAILABLE
    assert unavailable.headers == {"Retry-After": "1"}
    assert unavailable.problem()["retry_after"] == 1
    assert unavailable.detail.startswith(f"{service} is unreachable")


def test_an_error_raised_from_a_lost_connection_is_one() -> None:
    try:
        try:
            raise rd.ConnectionError("Connection reset by peer")
        except rd.ConnectionError as exc:
            raise RuntimeError("publishing failed") from exc
    except RuntimeError as wrapped:
        unavailable = outage(wrapped)
    assert unavailable is not None and unavailable.detail.startswith("Redis")


def test_a_refused_reconnect_is_named_by_the_library_that_raised_it() -> None:
    """A plain OSError names the service whose client's code raised it, as its traceback shows."""
    library: dict[str, object] = {"__name__": "redis.asyncio.connection"}
    exec("def reconnect():\n    raise ConnectionRefusedError(111, 'Connection refused')\n", library)
    with pytest.raises(ConnectionRefusedError) as refused:
        library["reconnect"]()  # type: ignore[operator]
    unavailable = outage(refused.value)
    assert unavailable is not None and unavailable.detail.startswith("Redis")


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        KeyError("id"),
        pg.UniqueViolationError("duplicate key"),
        pg.SerializationError("could not serialize"),
        rd.ResponseError("WRONGTYPE"),
        # asyncpg's client-side errors that are a bug or bad data, not a lost connection
        pg.DataError("invalid input for query argument $1: 'x' ('str' object cannot be interpreted as an integer)"),
        pg.InterfaceError("cannot perform operation: another operation is in progress"),
        pg.InterfaceError("cannot call Connection.fetch(): connection has been released back to the pool"),
        pg.InterfaceError("cursor cannot be created outside of a transaction"),
        pg.ClientConfigurationError("invalid connection parameter"),
        pg.InternalClientError("_on_result: waiter is None"),
        pg.InternalClientError("could not resolve query result and/or argument types in 6 attempts"),
        pg.ProtocolError("unexpected trailing 4 bytes in buffer"),
        pg.OutdatedSchemaCacheError("cache lookup failed for type 16385"),
    ],
)
def test_any_other_error_is_not_an_outage(error: Exception) -> None:
    assert outage(error) is None


def test_a_bug_while_handling_an_outage_but_not_raised_from_it_is_a_bug() -> None:
    try:
        try:
            raise rd.ConnectionError("gone")
        except rd.ConnectionError:
            raise ValueError("unrelated") from None
    except ValueError as bug:
        assert outage(bug) is None


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


class _HeldProxy:
    """127.0.0.1:`port` forwards to PostgreSQL, but when the server ends a connection it holds the client's side
    open: the client has read the server's farewell and not yet seen the connection end."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server_ended = asyncio.Event()
        self.port = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._pumps: list[asyncio.Future[None]] = []

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        self._writers += [client_w, upstream_w]
        self._pumps.append(asyncio.ensure_future(_pump(client_r, upstream_w)))
        with contextlib.suppress(ConnectionError):
            await _pump(upstream_r, client_w)
        self.server_ended.set()  # and the client's side stays open

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[_HeldProxy]:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            for pump in self._pumps:
                pump.cancel()
            for writer in self._writers:
                writer.transport.abort()
            server.close()
            await server.wait_closed()


async def test_the_first_query_on_a_pooled_connection_the_server_ended_is_an_outage() -> None:
    async with database(await need_postgres()) as url:
        parts = urlsplit(url)
        held = _HeldProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
        async with held.running():
            via = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{held.port}"))
            pool = await asyncpg.create_pool(via, min_size=1, max_size=1)
            try:
                pid = await pool.fetchval("SELECT pg_backend_pid()")
                admin = await asyncpg.connect(url)
                try:
                    await admin.execute("SELECT pg_terminate_backend($1)", pid)
                finally:
                    await admin.close()
                await held.server_ended.wait()
                # The farewell is in the client's socket: one turn of the loop reads it, a second resumes this test.
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                with pytest.raises(pg.InternalClientError) as raised:
                    await pool.fetchval("SELECT 1")
            finally:
                pool.terminate()
        unavailable = outage(raised.value)
        assert unavailable is not None and unavailable.status == 503
        assert unavailable.detail.startswith("PostgreSQL is unreachable")
