"""End to end: processes. One `rt serve` per SQLite data dir; `rt serve --workers N` on PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import pg
from tests.conftest import need_postgres, need_redis
from tests.e2e.server import KEY_LINE, Server, cli, free_port, run_server

ENV = {"RT_PAPER_TICK_MS": "0", "RT_TIER_LIMITS": "pro_plus=100000/100000"}
WORKERS = ("-m", "rt", "serve", "--workers", "2")


def _serve(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "RT_DATA_DIR": str(data_dir), "RT_PORT": str(free_port()), **ENV, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rt", "serve", *args], env=full, capture_output=True, text=True, timeout=30, check=False
    )


# one server per SQLite data dir


def test_a_second_server_on_a_data_dir_in_use_refuses_naming_the_dir_and_the_pid(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with run_server(data, ENV) as first:
        second = _serve(data)
        assert second.returncode != 0
        assert f"the data dir {data.resolve()} is in use" in second.stderr
        assert f"(pid {first.process.pid})" in second.stderr
        assert "Traceback" not in second.stderr and second.stdout == ""
        # The short store commands do not take the data dir: they work beside the running server.
        created = cli(data, "accounts", "create", "beside-the-server")
        assert created.returncode == 0, created.stderr
        listed = cli(data, "accounts", "list", "--json")
        assert listed.returncode == 0 and "beside-the-server" in listed.stdout
        assert httpx.get(first.url + "/v1/health").status_code == 200, "the first server kept serving"
        # Killed without a chance to clean up, the first leaves its pid in rt.lock; the lock itself dies with it.
        first.process.kill()
        first.process.wait()
    with run_server(data, ENV) as again:
        assert httpx.get(again.url + "/v1/health").status_code == 200
        assert (data / "rt.lock").read_text().strip() == str(again.process.pid)


def test_a_data_dir_on_postgres_is_not_locked(tmp_path: Path) -> None:
    """Many instances share one PostgreSQL store: none takes a lock on its data dir."""
    url = asyncio.run(_fresh_database())
    try:
        env = {**ENV, "RT_DATABASE_URL": url}
        data = tmp_path / "data"
        with run_server(data, env), run_server(data, env) as second:
            assert httpx.get(second.url + "/v1/health").status_code == 200
            assert not (data / "rt.lock").exists()
    finally:
        asyncio.run(pg.drop_database(url))


async def _fresh_database() -> str:
    return await pg.fresh_database(await need_postgres())


@pytest.mark.parametrize(
    "env",
    [{}, {"RT_REDIS_URL": "redis://127.0.0.1:6379/13"}, {"RT_DATABASE_URL": "postgresql://postgres@127.0.0.1/x"}],
    ids=["sqlite", "sqlite-with-redis", "postgres-without-redis"],
)
def test_workers_refuse_to_start_without_postgres_and_redis(env: dict[str, str], tmp_path: Path) -> None:
    refused = _serve(tmp_path / "data", "--workers", "2", env=env)
    assert refused.returncode != 0
    assert "--workers 2 needs PostgreSQL" in refused.stderr and "Redis" in refused.stderr
    assert refused.stdout == "" and not (tmp_path / "data" / "rt.db").exists()


# --workers N


def children(pid: int) -> set[int]:
    """The live processes whose parent is `pid`."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def metrics_ports() -> int:
    """A port p with p + 1 free as well: worker i serves its metrics on RT_METRICS_PORT + i."""
    while True:
        port = free_port()
        try:
            with httpx.Client() as probe:
                probe.get(f"http://127.0.0.1:{port + 1}/", timeout=0.2)
        except httpx.ConnectError:
            return port
        except httpx.HTTPError:
            continue


def served(metrics_port: int, route: str) -> int:
    """How many requests to `route` one worker answered 200, by its own metrics."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    pattern = rf'^rt_http_request_duration_seconds_count{{method="GET",route="{re.escape(route)}",status="200"}} (\S+)$'
    match = re.search(pattern, text, re.M)
    return int(float(match.group(1))) if match else 0


def wait_for_workers(server: Server, count: int, within: float = 20) -> set[int]:
    """The workers' pids, once the supervisor has `count` of them."""
    deadline = time.monotonic() + within
    while True:
        pids = children(server.process.pid)
        if len(pids) == count:
            return pids
        assert time.monotonic() < deadline, f"{len(pids)} workers, not {count}:\n{server.logs()[-3000:]}"
        time.sleep(0.05)


@pytest.fixture
def workers_env(tmp_path: Path, redis_prefix: str) -> Iterator[dict[str, str]]:
    redis_url = asyncio.run(need_redis())
    url = asyncio.run(_fresh_database())
    try:
        yield {
            **ENV,
            "RT_DATABASE_URL": url,
            "RT_REDIS_URL": redis_url,
            "RT_REDIS_PREFIX": redis_prefix,
            "RT_METRICS_PORT": str(metrics_ports()),
        }
    finally:
        asyncio.run(pg.drop_database(url))


def both_answer(server: Server, base: int, route: str, *, within: float = 20) -> list[int]:
    """Fresh connections (the kernel spreads them over the workers' sockets) until both workers answered `route`;
    every one of them is answered 200. Returns each worker's count."""
    assert server.key is not None
    deadline = time.monotonic() + within
    while True:
        for _ in range(10):
            with server.client(server.key) as http:  # a new connection each time
                response = http.get(route)
            assert response.status_code == 200, response.text
        counts = [served(base, route), served(base + 1, route)]
        if all(counts):
            return counts
        assert time.monotonic() < deadline, f"requests reached one worker only: {counts}"


def test_two_workers_serve_one_port_restart_when_one_dies_and_stop_on_sigterm(
    tmp_path: Path, workers_env: dict[str, str]
) -> None:
    base = int(workers_env["RT_METRICS_PORT"])
    with run_server(tmp_path / "data", workers_env, program=WORKERS) as server:
        pids = wait_for_workers(server, 2)
        assert server.key is not None
        # Every worker is a full instance on the shared store: each authenticates the key and reads the account.
        both_answer(server, base, "/v1/account")
        assert len(KEY_LINE.findall(server.stdout())) == 1, "the first key is printed once, by one worker"

        # A worker that dies is replaced; the port answers throughout.
        victim = min(pids)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while (now := children(server.process.pid)) == pids or len(now) != 2:
            assert time.monotonic() < deadline, server.logs()[-3000:]
            assert httpx.get(server.url + "/v1/health", timeout=10).status_code == 200
            time.sleep(0.05)
        assert victim not in now and len(now & pids) == 1
        both_answer(server, base, "/v1/health")

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.logs()[-3000:]
        assert children(server.process.pid) == set()
        for pid in now:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        logs = server.logs()
        assert logs.count('"msg":"worker stopped"') == 2 and "Traceback" not in logs
