"""rt/server: what `rt serve` warns about before it listens, its data dir lock, its service checks, its workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from rt.config import Settings
from rt.errors import RtError
from rt.server import (
    DataDirInUse,
    ServiceUnreachable,
    check_services,
    hold_data_dir,
    listen,
    masked,
    startup_warnings,
    worker_settings,
)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_needs_no_tls_warning(host: str, tmp_path: Path) -> None:
    assert startup_warnings(Settings(host=host, data_dir=str(tmp_path / "new"))) == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "rt.example.com"])
def test_any_other_host_without_a_proxy_warns_that_keys_travel_in_clear(host: str, tmp_path: Path) -> None:
    (warning,) = startup_warnings(Settings(host=host, data_dir=str(tmp_path / "new")))
    assert host in warning and "clear text" in warning and "TLS" in warning and "RT_TRUSTED_PROXIES" in warning
    proxied = Settings(host=host, data_dir=str(tmp_path / "new"), trusted_proxies=("10.0.0.1",))
    assert startup_warnings(proxied) == []


@pytest.mark.parametrize(("mode", "warned"), [(0o700, False), (0o750, True), (0o755, True), (0o707, True)])
def test_a_data_dir_others_can_enter_is_named_with_its_fix(mode: int, warned: bool, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    data_dir.chmod(mode)
    warnings = startup_warnings(Settings(data_dir=str(data_dir)))
    assert bool(warnings) is warned
    if warned:
        assert f"mode {mode:04o}" in warnings[0] and f"chmod 700 {data_dir}" in warnings[0]


# one process per SQLite data dir


def test_a_data_dir_is_held_by_one_process_and_names_the_holder(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"))
    held = hold_data_dir(settings)
    assert held is not None
    assert (tmp_path / "data").stat().st_mode & 0o777 == 0o700
    assert held.path.read_text().strip() == str(os.getpid())
    # flock belongs to an open file, so a second open in this same process is refused as another process is.
    with pytest.raises(DataDirInUse) as refused:
        hold_data_dir(settings)
    assert str((tmp_path / "data").resolve()) in refused.value.detail
    assert f"pid {os.getpid()}" in refused.value.detail
    held.release()
    again = hold_data_dir(settings)
    assert again is not None
    again.release()


def test_a_store_many_processes_share_takes_no_lock(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"), database_url="postgresql://rt@db.example/rt")
    assert hold_data_dir(settings) is None
    assert not (tmp_path / "data").exists()


def test_a_sqlite_url_elsewhere_is_locked_where_its_file_is(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path / "data"), database_url=f"sqlite:///{tmp_path / 'db' / 'rt.db'}")
    held = hold_data_dir(settings)
    assert held is not None and held.path == (tmp_path / "db" / "rt.lock").resolve()
    held.release()


# the services named at start


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://rt:hunter2@db.example:5432/rt", "postgresql://rt:***@db.example:5432/rt"),
        ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://127.0.0.1:6379/0?password=hunter2&db=1", "redis://127.0.0.1:6379/0?password=***&db=1"),
        ("postgresql://rt@db.example/rt", "postgresql://rt@db.example/rt"),
        ("rediss://u:p%40ss@h:1/2", "rediss://u:***@h:1/2"),
    ],
)
def test_a_url_is_shown_with_its_password_masked(url: str, shown: str) -> None:
    assert masked(url) == shown


async def test_nothing_to_check_without_postgres_or_redis(tmp_path: Path) -> None:
    await check_services(Settings(data_dir=str(tmp_path)))


async def test_a_refused_service_is_named_with_its_masked_url() -> None:
    port = _closed_port()
    with pytest.raises(ServiceUnreachable) as refused:
        await check_services(Settings(redis_url=f"redis://:hunter2@127.0.0.1:{port}/0"))
    assert refused.value.detail.startswith(f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0: ")
    assert "hunter2" not in refused.value.detail


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --workers N


def test_each_worker_has_its_metrics_port_and_only_the_first_bootstraps() -> None:
    settings = Settings(metrics_port=9100, bootstrap=True)
    assert [(w.metrics_port, w.bootstrap) for w in (worker_settings(settings, i) for i in range(3))] == [
        (9100, True),
        (9101, False),
        (9102, False),
    ]
    off = Settings(metrics_port=0, bootstrap=False)
    assert [(w.metrics_port, w.bootstrap) for w in (worker_settings(off, i) for i in range(2))] == [
        (0, False),
        (0, False),
    ]


def test_workers_share_one_port_and_a_port_in_use_is_refused() -> None:
    sockets = listen("127.0.0.1", 0, 3)
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(ports) == 1
        with pytest.raises(RtError, match=r"cannot listen on 127\.0\.0\.1"):
            listen("127.0.0.1", ports.pop(), 2)
    finally:
        for s in sockets:
            s.close()


STUCK_SHUTDOWN = """
import asyncio
from rt import logs, server

async def wait_for_ever():
    await asyncio.get_running_loop().create_future()

async def close():
    await wait_for_ever()

async def main():
    asyncio.create_task(close(), name="stuck-close")
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, server.log_pending_tasks, 0.05)
    loop.call_later(0.1, server.give_up, 0.1)
    await asyncio.sleep(30)

logs.configure()
asyncio.run(main())
"""


def test_a_stuck_shutdown_names_what_it_waits_on_then_the_process_exits() -> None:
    done = subprocess.run([sys.executable, "-c", STUCK_SHUTDOWN], capture_output=True, text=True, timeout=20)
    assert done.returncode == 1
    records = [orjson.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    slow, stuck = (r for r in records if r["logger"] == "rt.server")
    assert (slow["level"], slow["msg"]) == ("warning", "shutdown still running")
    assert (stuck["level"], stuck["msg"]) == ("error", "shutdown did not finish; exiting now")
    for record in slow, stuck:
        (task,) = (t for t in record["tasks"] if t["name"] == "stuck-close")
        assert [frame.partition(" ")[0] for frame in task["at"]] == ["close", "wait_for_ever"], task
