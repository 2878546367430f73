"""Several real `rt serve` processes on one PostgreSQL database and one Redis prefix, as docker-compose runs them."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from tests.e2e.server import Server, run_server
from tests.pg import drop_database, fresh_database


@dataclass
class Cluster:
    servers: list[Server]
    env: dict[str, str]
    root: Path
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def key(self) -> str:
        key = self.servers[0].key
        assert key, "the first instance bootstraps the first key"
        return key

    def restart(self, index: int) -> Server:
        """Stop one instance (SIGTERM) and start it again on the same port."""
        old = self.servers[index]
        old.process.terminate()
        try:
            old.process.wait(15)
        except subprocess.TimeoutExpired:
            # Slow to exit after its shutdown: say where it is, then give it longer before the test fails.
            where = stacks(old.process.pid)
            print(f"rt serve on {old.port} still running 15 s after SIGTERM:\n{where}", file=sys.stderr)
            try:
                old.process.wait(30)
            finally:
                print(f"rt serve on {old.port}, its log's tail:\n{old.log_path.read_text()[-6000:]}", file=sys.stderr)
        self.servers[index] = self.stack.enter_context(
            run_server(old.data_dir, {**self.env, "RT_BOOTSTRAP": "false"}, port=old.port)
        )
        return self.servers[index]


def stacks(pid: int) -> str:
    """The Python stacks of a running process (py-spy, when installed), and its log's tail is printed by run_server."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        done = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(no stack dump: {exc})"
    return done.stdout + done.stderr


def _glob_escaped(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\^" else c for c in text)


async def delete_prefix(redis_url: str, prefix: str) -> int:
    """UNLINK every key rt wrote under `prefix` (`{prefix}:...`), found with SCAN; the number deleted."""
    client = aioredis.Redis.from_url(redis_url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{_glob_escaped(prefix)}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += await client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted


@contextlib.contextmanager
def cluster(root: Path, redis_url: str, size: int = 3, env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """`size` instances sharing a fresh PostgreSQL database, one Redis prefix, one pepper and one secret key; the
    first bootstraps the first key. Every process is stopped (by its PID), then the database is dropped and every Redis
    key under the prefix deleted."""
    database_url = asyncio.run(fresh_database())
    shared = {
        "RT_DATABASE_URL": database_url,
        "RT_REDIS_URL": redis_url,
        "RT_REDIS_PREFIX": f"rt-test-{uuid.uuid4().hex[:12]}",
        "RT_KEY_PEPPER": secrets.token_hex(32),
        "RT_SECRET_KEY": secrets.token_hex(32),
        "RT_LEASE_TTL_MS": "1500",
        **(env or {}),
    }
    group = Cluster([], shared, root)
    try:
        with group.stack:
            for index in range(size):
                instance_env = {**shared, "RT_BOOTSTRAP": "true" if index == 0 else "false"}
                group.servers.append(group.stack.enter_context(run_server(root / f"i{index}", instance_env)))
            yield group
    finally:
        try:
            asyncio.run(delete_prefix(redis_url, shared["RT_REDIS_PREFIX"]))
        finally:
            asyncio.run(drop_database(database_url))
