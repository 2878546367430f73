"""rt/runtime: every process on one store uses the pepper and the secret key the store was first opened with."""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import pytest

from rt.auth.keys import KeyHasher
from rt.auth.vault import load_pepper
from rt.config import ConfigError, Settings
from rt.runtime import fingerprint, open_runtime
from rt.store import open_store


def _settings(data_dir: Path, **changes: object) -> Settings:
    return Settings(data_dir=str(data_dir), paper_tick_ms=0).replace(**changes)


async def test_a_data_dir_with_generated_secrets_opens_again_and_again(tmp_path: Path) -> None:
    async with open_runtime(_settings(tmp_path)) as runtime:
        account = await runtime.keys.create_account("alone", actor="tests")
        issued = await runtime.keys.create(account.id, "full", "pro", actor="tests")
    # Opened again (a restart, a CLI command) with the pepper it generated, the store finds the key by its digest.
    async with open_runtime(_settings(tmp_path)) as runtime:
        digest = KeyHasher(load_pepper("", tmp_path)).digest(issued.key)
        found = await runtime.store.key_by_digest(digest)
        assert found is not None and found.id == issued.record.id


async def test_another_pepper_on_the_store_refuses_and_creates_nothing(tmp_path: Path) -> None:
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    async with open_runtime(_settings(tmp_path / "a", database_url=shared, key_pepper="a")):
        pass
    with pytest.raises(ConfigError) as refused:
        async with open_runtime(_settings(tmp_path / "b", database_url=shared)) as runtime:
            await runtime.keys.create_account("teamA", actor="tests")
    assert str(refused.value.detail) == (
        "this store's API keys were made with another pepper: set RT_KEY_PEPPER as the other instances have it "
        "(a pepper generated into DATA_DIR/pepper is not shared)"
    )
    store = await open_store(shared)
    try:
        assert await store.count_accounts() == 0
    finally:
        await store.close()


async def test_another_secret_key_on_the_store_refuses(tmp_path: Path) -> None:
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    async with open_runtime(_settings(tmp_path / "a", database_url=shared, key_pepper="p", secret_key="s")):
        pass
    with pytest.raises(ConfigError, match="sealed with another secret key: set RT_SECRET_KEY as the other"):
        async with open_runtime(_settings(tmp_path / "b", database_url=shared, key_pepper="p", secret_key="t")):
            pass
    async with open_runtime(_settings(tmp_path / "c", database_url=shared, key_pepper="p", secret_key="s")):
        pass  # the same settings in another data dir open it


async def test_a_store_from_before_fingerprints_takes_the_first_that_opens_it(tmp_path: Path) -> None:
    async with open_runtime(_settings(tmp_path, key_pepper="old", secret_key="old")):
        pass
    async with aiosqlite.connect(tmp_path / "rt.db") as db:
        await db.execute("DELETE FROM meta")
        await db.commit()
    async with open_runtime(_settings(tmp_path, key_pepper="new", secret_key="new")) as runtime:
        stored = await runtime.store.claim("key_pepper_fingerprint", "-")
    assert stored != "new" and len(stored) == 64, "a fingerprint, not the pepper"
    with pytest.raises(ConfigError, match="another pepper"):
        async with open_runtime(_settings(tmp_path, key_pepper="old", secret_key="new")):
            pass


def test_a_fingerprint_tells_secrets_apart_and_is_not_the_secret() -> None:
    one = fingerprint(b"\x01" * 32, "key_pepper_fingerprint")
    assert one == fingerprint(b"\x01" * 32, "key_pepper_fingerprint")
    assert one != fingerprint(b"\x02" * 32, "key_pepper_fingerprint")
    assert one != fingerprint(b"\x01" * 32, "secret_key_fingerprint")
    assert "01" * 32 not in one
