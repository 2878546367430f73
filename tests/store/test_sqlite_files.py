"""rt/store/sqlite: the database, its WAL files and the directory it creates are the owner's alone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from rt.store.sqlite import SQLiteStore


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The umask most systems start with, under which files are 0644 and directories 0755 unless rt says otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes(directory: Path) -> dict[str, int]:
    return {path.name: mode(path) for path in directory.iterdir()}


def loosen(directory: Path) -> None:
    for path in directory.iterdir():
        path.chmod(0o644)


async def write_something(store: SQLiteStore) -> None:
    await store.create_account(f"files-{os.urandom(4).hex()}")


async def test_a_new_store_creates_its_directory_and_files_for_the_owner_only(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    store = await SQLiteStore.open(str(data_dir / "rt.db"))
    try:
        await write_something(store)
        files = modes(data_dir)
    finally:
        await store.close()
    assert mode(data_dir) == 0o700
    assert files == {"rt.db": 0o600, "rt.db-wal": 0o600, "rt.db-shm": 0o600}


async def test_an_existing_store_with_loose_modes_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "rt.db"
    store = await SQLiteStore.open(str(db))
    await write_something(store)
    await store.close()
    loosen(tmp_path)
    store = await SQLiteStore.open(str(db))
    try:
        await write_something(store)
        files = modes(tmp_path)
    finally:
        await store.close()
    assert files and all(name.startswith("rt.db") for name in files)
    assert set(files.values()) == {0o600}, files
