"""run_server(): the real `rt serve` in a subprocess on a free port, with its bootstrap key."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

SERVE = ("-m", "rt", "serve")
KEY_LINE = re.compile(r"API key \(shown only now\): (rt_(?:live|test)_[0-9A-Za-z]{32})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    port: int
    data_dir: Path
    key: str | None
    process: subprocess.Popen[str]
    log_path: Path

    def client(self, key: str | None = None, **kwargs: object) -> httpx.Client:
        headers = {"X-API-Key": key} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10, **kwargs)  # type: ignore[arg-type]

    def logs(self) -> str:
        return self.log_path.read_text()

    def stdout(self) -> str:
        return (self.data_dir.parent / f"stdout-{self.port}.txt").read_text()


def cli(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the `rt` CLI on a data dir."""
    full_env = {**os.environ, "RT_DATA_DIR": str(data_dir), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "rt", *args], capture_output=True, text=True, env=full_env, timeout=60, check=False
    )


@contextlib.contextmanager
def run_server(
    data_dir: Path,
    env: dict[str, str] | None = None,
    port: int | None = None,
    program: Sequence[str] = SERVE,
    argv_prefix: Sequence[str] = (),
) -> Iterator[Server]:
    """Start `rt serve` (or another Python program serving it), wait for /v1/health, yield, then stop it with SIGTERM
    unless it has already ended. `argv_prefix` runs it under a command that execs it, e.g. `taskset -c 0`."""
    port = port or free_port()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stdout_path = data_dir.parent / f"stdout-{port}.txt"
    log_path = data_dir.parent / f"stderr-{port}.txt"
    full_env = {**os.environ, "RT_DATA_DIR": str(data_dir), "RT_PORT": str(port), "RT_HOST": "127.0.0.1", **(env or {})}
    with open(stdout_path, "w") as out, open(log_path, "w") as err:
        argv = [*argv_prefix, sys.executable, *program]
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=full_env, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"rt serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(url + "/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"rt serve did not answer within 30 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        match = KEY_LINE.search(stdout_path.read_text())
        yield Server(url, port, data_dir, match.group(1) if match else None, process, log_path)
    finally:
        if process.poll() is not None:
            # It ended before the test let it go: say why, for the report of whatever failed because of it.
            print(
                f"rt serve on {port} ended early with {process.returncode}:\n{log_path.read_text()[-3000:]}",
                file=sys.stderr,
            )
        else:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
