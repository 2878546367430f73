"""rt/store/sqlite: the default Store twin, on a real file: its schema version lives in the file itself."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rt.store.migrations import load
from rt.store.sqlite import SQLiteStore
from tests.store.test_store import stored


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "rt.db"


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


async def test_migrations_set_user_version_and_are_idempotent(db_path: Path) -> None:
    latest = max(version for version, _ in load("sqlite"))
    first = await SQLiteStore.open(str(db_path))
    account = await first.create_account("alice")
    await first.close()
    assert user_version(db_path) == latest

    # Reopening must not re-run migrations (CREATE TABLE would fail) nor lose data.
    for _ in range(2):
        again = await SQLiteStore.open(str(db_path))
        assert await again.get_account(account.id) == stored(account)
        await again.close()
    assert user_version(db_path) == latest
