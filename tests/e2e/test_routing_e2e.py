"""The route pipeline over real sockets against `rt serve`: a client gone mid-body is a disconnect, not a 500; a
refused key is answered without waiting for the body; deep bodies are 400."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.e2e.checks import LeakCheck, assert_problem
from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e

ENV = {"RT_PAPER_TICK_MS": "0", "RT_PAPER_SYMBOLS": "ETH/USDT=3500"}
INVALID_KEY = "rt_live_" + "A" * 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, leaks: LeakCheck) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("routing") / "data", ENV) as started:
        yield leaks.watch(started)


def head(path: str, key: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def wait_for_log(server: Server, needle: str, within: float = 5.0) -> str:
    deadline = time.monotonic() + within
    while True:
        logs = server.logs()
        if needle in logs or time.monotonic() > deadline:
            return logs
        time.sleep(0.05)


def test_a_client_gone_mid_body_leaves_no_500_and_no_traceback(server: Server) -> None:
    assert server.key
    before = len(server.logs())
    body = b'{"exchange": "paper", "symbol": "ETH/USDT", "side": "buy", "type": "market", "quantity": 0.01}'
    with connect(server) as sock:
        sock.sendall(head("/v1/orders", server.key, len(body)) + body[: len(body) // 2])
        time.sleep(0.2)
    logs = wait_for_log(server, '"status":499')[before:]
    assert '"status":499' in logs, logs
    assert '"status":500' not in logs and "Traceback" not in logs and "unhandled" not in logs, logs
    assert '"level":"error"' not in logs.lower() and "ERROR" not in logs, logs
    # The server goes on serving.
    with server.client(server.key) as http:
        assert http.get("/v1/account").status_code == 200


@pytest.mark.parametrize("key", [INVALID_KEY, "not-a-key"])
def test_an_invalid_key_is_401_at_once_without_waiting_for_the_body(server: Server, key: str) -> None:
    with connect(server) as sock:
        sock.sendall(head("/v1/orders", key, 100))  # the 100 bytes never come
        started = time.monotonic()
        sock.settimeout(3)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert b"API_KEY_INVALID" in answer
    assert time.monotonic() - started < 2


def test_a_deep_body_with_an_idempotency_key_is_400(server: Server) -> None:
    assert server.key
    deep = b"[" * 300 + b"1" + b"]" * 300
    content = b'{"name": "g", "type": "grid", "symbol": "ETH/USDT", "config": {"x": ' + deep + b"}}"
    headers = {"Content-Type": "application/json", "Idempotency-Key": "deep-e2e"}
    with server.client(server.key) as http:
        answer = http.post("/v1/strategies", content=content, headers=headers)
        assert_problem(answer, 400, "BAD_REQUEST")
    assert "Traceback" not in server.logs()
