"""rt.errors.outage(): which errors mean PostgreSQL or Redis is unreachable (503, retry) rather than a bug (500)."""

from __future__ import annotations

import asyncpg.exceptions as pg
import pytest
import redis.exceptions as rd

from rt.errors import SERVICE_UNAVAILABLE, outage


@pytest.mark.parametrize(
    ("error", "service"),
    [
        (pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"), "PostgreSQL"),
        (pg.PostgresConnectionError("connection failure"), "PostgreSQL"),
        (pg.InterfaceError("connection is closed"), "PostgreSQL"),
        (pg.AdminShutdownError("terminating connection due to administrator command"), "PostgreSQL"),
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
