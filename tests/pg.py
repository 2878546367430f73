"""PostgreSQL for tests: a fresh database of its own per use, on the test server, dropped afterwards."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# The server's maintenance database: test databases are created and dropped from it, never used by tests.
POSTGRES_URL = os.environ.get("RT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def postgres_available(url: str = POSTGRES_URL) -> bool:
    try:
        conn = await asyncpg.connect(url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


async def fresh_database(admin_url: str = POSTGRES_URL) -> str:
    """Create an empty database with a random name and return its URL."""
    name = f"rt_test_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_url, name)


async def drop_database(url: str, admin_url: str = POSTGRES_URL) -> None:
    """Drop a database fresh_database() made, closing whatever connections are still open on it."""
    name = database_of(url)
    if not name.startswith("rt_test_"):
        raise ValueError(f"refusing to drop {name!r}: not a test database")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def database(admin_url: str = POSTGRES_URL) -> AsyncIterator[str]:
    """A fresh database's URL for the block; dropped when it ends."""
    url = await fresh_database(admin_url)
    try:
        yield url
    finally:
        await drop_database(url, admin_url)
