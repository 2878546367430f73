"""One `store` fixture over both twins: SQLite on a file of its own, PostgreSQL on a database of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rt.store import Store, open_store
from tests.conftest import need_postgres
from tests.pg import database


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database, dropped after the test."""
    async with database(await need_postgres()) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Where a fresh store of each twin lives; tests that need two processes' view open it twice."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'rt.db'}"
        return
    async with database(await need_postgres()) as url:
        yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()
