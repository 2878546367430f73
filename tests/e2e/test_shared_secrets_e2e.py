"""End to end: every process on one PostgreSQL store, the CLI included, uses the same pepper and secret key, or
refuses to start in one line naming the setting."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pg
from tests.conftest import need_postgres
from tests.e2e.server import cli, free_port, run_server
from tests.e2e.test_auth_e2e import get

pytestmark = pytest.mark.e2e

ENV = {"RT_PAPER_TICK_MS": "0", "RT_KEY_PEPPER": "pepper-a", "RT_SECRET_KEY": "secret-a"}
PEPPER_REFUSAL = (
    "this store's API keys were made with another pepper: set RT_KEY_PEPPER as the other instances have it "
    "(a pepper generated into DATA_DIR/pepper is not shared)"
)


@pytest.fixture
def database_url() -> Iterator[str]:
    url = asyncio.run(_fresh())
    try:
        yield url
    finally:
        asyncio.run(pg.drop_database(url))


async def _fresh() -> str:
    return await pg.fresh_database(await need_postgres())


def _without_secrets() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("RT_KEY_PEPPER", "RT_SECRET_KEY")}


def _cli(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**_without_secrets(), "RT_DATA_DIR": str(data_dir), **env}
    return subprocess.run(
        [sys.executable, "-m", "rt", *args], capture_output=True, text=True, env=full, timeout=60, check=False
    )


def test_a_cli_without_the_pepper_refuses_and_creates_nothing(tmp_path: Path, database_url: str) -> None:
    shared = {**ENV, "RT_DATABASE_URL": database_url}
    with run_server(tmp_path / "d1", shared) as server:
        bare = {"RT_DATABASE_URL": database_url}
        refused = _cli(
            tmp_path / "dcli", bare, "keys", "create", "--account", "default", "--scopes", "full", "--tier", "pro"
        )
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [f"Error: CONFIG_INVALID: {PEPPER_REFUSAL}"]
        assert refused.stdout == ""
        with_json = _cli(tmp_path / "dcli", bare, "accounts", "create", "teamA", "--json")
        assert with_json.returncode == 1
        assert json.loads(with_json.stderr)["error"] == {
            "code": "CONFIG_INVALID",
            "message": f"CONFIG_INVALID: {PEPPER_REFUSAL}",
        }
        # The right pepper but another secret key: what it sealed no other instance could open.
        other_key = _cli(tmp_path / "dcli", {**shared, "RT_SECRET_KEY": "secret-b"}, "accounts", "create", "teamA")
        assert other_key.returncode == 1
        assert "sealed with another secret key: set RT_SECRET_KEY as the other instances have it" in other_key.stderr

        # Nothing was made; with the same settings the CLI, in a data dir of its own, makes a key the server takes.
        listed = _cli(tmp_path / "dcli", shared, "accounts", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [a["name"] for a in json.loads(listed.stdout)] == ["default"]
        keys = _cli(tmp_path / "dcli", shared, "keys", "list", "--json")
        assert [k["name"] for k in json.loads(keys.stdout)] == ["bootstrap"]
        made = _cli(
            tmp_path / "dcli",
            shared,
            "keys",
            "create",
            "--account",
            "default",
            "--scopes",
            "full",
            "--tier",
            "pro",
            "--json",
        )
        assert made.returncode == 0, made.stderr
        assert get(server, json.loads(made.stdout)["key"]).status_code == 200
        assert get(server, server.key).status_code == 200


def test_a_second_server_with_another_secret_key_refuses_to_start(tmp_path: Path, database_url: str) -> None:
    shared = {**ENV, "RT_DATABASE_URL": database_url}
    with run_server(tmp_path / "d1", shared) as server:
        env = {**shared, "RT_SECRET_KEY": "secret-b", "RT_PORT": str(free_port()), "RT_DATA_DIR": str(tmp_path / "d2")}
        second = subprocess.run(
            [sys.executable, "-m", "rt", "serve"],
            env={**_without_secrets(), **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert "sealed with another secret key: set RT_SECRET_KEY as the other instances have it" in lines[0]
        assert get(server, server.key).status_code == 200, "the first server kept serving"
    # The same settings in another data dir start (each instance may have a data dir of its own).
    with run_server(tmp_path / "d3", shared) as again:
        assert get(again, server.key).status_code == 200, "the bootstrap key works on the new instance too"


def test_a_cli_on_a_sqlite_data_dir_uses_its_generated_pepper(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with run_server(data, {"RT_PAPER_TICK_MS": "0"}) as server:
        made = cli(data, "keys", "create", "--account", "default", "--scopes", "full", "--tier", "pro", "--json")
        assert made.returncode == 0, made.stderr
        assert get(server, json.loads(made.stdout)["key"]).status_code == 200
