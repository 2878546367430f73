"""End to end: what `rt serve` refuses before the app sees a request, and what it says and creates when it starts."""

from __future__ import annotations

import json
import re
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets.sync.client

from tests.e2e.checks import PROBLEM_JSON, LeakCheck, assert_problem
from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e

PAD_BYTES = 64 * 1024 * 1024
README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, leaks: LeakCheck) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("server") / "data") as started:
        yield leaks.watch(started)


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length, and whether the server then closed the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside the body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    try:
        while True:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def assert_refused(status: int, headers: dict[str, str], body: bytes, expected: int) -> None:
    assert status == expected, body
    assert headers["content-type"].startswith(PROBLEM_JSON)
    assert headers["connection"] == "close"
    problem = json.loads(body)
    assert problem["status"] == expected and problem["code"] == "BAD_REQUEST"
    assert problem["title"] == {414: "URI Too Long", 431: "Request Header Fields Too Large"}[expected]
    assert problem["detail"]
    assert problem["instance"] == headers["x-request-id"]


def send_forever(sock: socket.socket, first: bytes, total: int) -> None:
    """What an attacker does: keep sending until the server hangs up, up to `total` bytes."""
    pad = b"a" * 65536
    try:
        sock.sendall(first)
        sent = 0
        while sent < total:
            sock.sendall(pad)
            sent += len(pad)
    except OSError:
        pass


def health_is_fast(server: Server, rounds: int = 10) -> list[float]:
    times = []
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for _ in range(rounds):
            started = time.monotonic()
            assert http.get("/v1/health").status_code == 200
            times.append(time.monotonic() - started)
    return times


def test_a_huge_header_is_refused_at_once_while_others_are_served(server: Server) -> None:
    with connect(server) as sock:
        first = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: "
        attacker = threading.Thread(target=send_forever, args=(sock, first, PAD_BYTES), daemon=True)
        started = time.monotonic()
        attacker.start()
        times = health_is_fast(server)
        status, headers, body = read_response(sock)
        assert time.monotonic() - started < 5
        assert_refused(status, headers, body, 431)
        assert closed_by_server(sock)
        attacker.join(10)
        assert not attacker.is_alive()
    assert max(times) < 1.0, times


def test_a_huge_header_sent_in_one_piece_is_refused(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 40_000 + b"\r\n\r\n")
        assert_refused(*read_response(sock), 431)
        assert closed_by_server(sock)


def test_too_many_headers_are_refused_and_the_most_allowed_pass(server: Server) -> None:
    def request(count: int) -> bytes:
        lines = b"".join(b"X-H%d: v\r\n" % i for i in range(count - 1))
        return b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + lines + b"\r\n"

    with connect(server) as sock:
        sock.sendall(request(100))
        status, _, _ = read_response(sock)
        assert status == 200
        sock.sendall(request(101))
        assert_refused(*read_response(sock), 431)
        assert closed_by_server(sock)


def test_a_huge_request_line_is_refused(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /v1/health?pad=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert_refused(*read_response(sock), 414)
        assert closed_by_server(sock)
    with connect(server) as sock:
        attacker = threading.Thread(target=send_forever, args=(sock, b"GET /v1/health?pad=", PAD_BYTES), daemon=True)
        attacker.start()
        assert_refused(*read_response(sock), 414)
        assert closed_by_server(sock)
        attacker.join(10)
        assert not attacker.is_alive()


def test_headers_within_the_limits_keep_the_connection(server: Server) -> None:
    with connect(server) as sock:
        sock.sendall(b"\r\n")
        time.sleep(0.05)
        for _ in range(3):
            sock.sendall(
                b"GET /v1/health?pad=" + b"a" * 4000 + b" HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"b" * 8000 + b"\r\n\r\n"
            )
            status, headers, _ = read_response(sock)
            assert status == 200
            assert headers.get("connection") != "close"


def test_a_trailing_slash_is_not_redirected_to_the_clients_host(server: Server) -> None:
    with server.client(server.key, follow_redirects=False) as http:
        for path in ("/v1/account/", "/v1/health/", "/v1/orders/?status=open"):
            response = http.get(path, headers={"Host": "evil.example"})
            assert "evil.example" not in response.headers.get("location", "")
            assert_problem(response, 404, "NOT_FOUND")


def modes(directory: Path) -> dict[str, int]:
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir()}


def test_a_fresh_data_dir_and_its_files_are_the_owners_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"  # run_server creates only the directory it is given, not this one
    with run_server(tmp_path / "logs", {"RT_DATA_DIR": str(data_dir)}) as started:
        with started.client(started.key) as http:
            assert http.get("/v1/account").status_code == 200
        files = modes(data_dir)
        dir_mode = stat.S_IMODE(data_dir.stat().st_mode)
    assert dir_mode == 0o700
    assert {"rt.db", "rt.db-wal", "rt.db-shm", "pepper", "secret.key"} <= set(files), files
    assert set(files.values()) == {0o600}, files
    assert "open to other users" not in started.logs()


def test_a_data_dir_open_to_others_is_warned_about(tmp_path: Path) -> None:
    data_dir = tmp_path / "loose"
    data_dir.mkdir(mode=0o755)
    data_dir.chmod(0o755)
    with run_server(data_dir, {"RT_BOOTSTRAP": "0"}) as started:
        pass
    warnings = [line for line in started.logs().splitlines() if '"level":"warning"' in line]
    assert any("open to other users (mode 0755)" in line and "chmod 700" in line for line in warnings), warnings


def test_listening_beyond_loopback_without_a_proxy_warns_about_clear_text(tmp_path: Path, server: Server) -> None:
    assert "clear text" not in server.logs()
    with run_server(tmp_path / "open", {"RT_HOST": "0.0.0.0", "RT_BOOTSTRAP": "0"}) as exposed:
        pass
    warnings = [line for line in exposed.logs().splitlines() if '"level":"warning"' in line]
    assert any("0.0.0.0" in line and "clear text" in line and "TLS" in line for line in warnings), warnings
    proxied = {"RT_HOST": "0.0.0.0", "RT_BOOTSTRAP": "0", "RT_TRUSTED_PROXIES": "127.0.0.1"}
    with run_server(tmp_path / "proxied", proxied) as behind_proxy:
        pass
    assert "clear text" not in behind_proxy.logs()


def readme_first_start() -> list[str]:
    """The block README.md shows after 'On its first start'."""
    text = README.read_text()
    block = text[text.index("On its first start") :].split("```", 2)[1]
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_shows_everything_the_first_start_prints(server: Server) -> None:
    printed = server.stdout().splitlines()
    shown = readme_first_start()
    assert len(printed) == len(shown), (printed, shown)
    for line, documented in zip(printed, shown, strict=True):
        pattern = ".+".join(re.escape(part) for part in documented.split("…"))
        assert re.fullmatch(pattern, line), (line, documented)


HEAD_DEADLINE_S = 1.0
MARKER = "hushmarker7f3"  # in each slow head's path and header values: the log line must not repeat any of it


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, leaks: LeakCheck) -> Iterator[Server]:
    env = {"RT_HEADER_TIMEOUT_S": str(int(HEAD_DEADLINE_S))}
    with run_server(tmp_path_factory.mktemp("strict") / "data", env) as started:
        yield leaks.watch(started)


def drip(sock: socket.socket, first: bytes, lines: int = 20, every: float = 0.25) -> None:
    """Slowloris: a request line, then one header line every `every` seconds, never the blank line."""
    try:
        sock.sendall(first)
        for i in range(lines):
            time.sleep(every)
            sock.sendall(b"X-%s-%d: %s\r\n" % (MARKER.encode(), i, MARKER.encode()))
    except OSError:
        pass


def assert_timed_out(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 408, body
    assert headers["content-type"].startswith(PROBLEM_JSON)
    assert headers["connection"] == "close"
    problem = json.loads(body)
    assert problem["status"] == 408 and problem["code"] == "BAD_REQUEST" and problem["title"] == "Request Timeout"
    assert problem["detail"] and problem["instance"] == headers["x-request-id"]


def test_a_slow_head_is_answered_408_and_closed_while_others_are_served(strict: Server) -> None:
    socks = [connect(strict) for _ in range(10)]
    started = time.monotonic()
    first = b"GET /v1/health?" + MARKER.encode() + b" HTTP/1.1\r\nHost: x\r\n"
    senders = [threading.Thread(target=drip, args=(sock, first), daemon=True) for sock in socks]
    for sender in senders:
        sender.start()
    try:
        times = health_is_fast(strict)
        for sock in socks:
            response = read_response(sock)
            assert HEAD_DEADLINE_S * 0.9 < time.monotonic() - started < HEAD_DEADLINE_S + 3
            assert_timed_out(*response)
            assert closed_by_server(sock)
        for sender in senders:
            sender.join(10)
            assert not sender.is_alive()
    finally:
        for sock in socks:
            sock.close()
    assert max(times) < 1.0, times
    lines = [line for line in strict.logs().splitlines() if '"status":408' in line]
    assert len(lines) == len(socks), lines
    assert not any(MARKER in line for line in strict.logs().splitlines())


def test_a_silent_connection_is_closed_without_an_answer(strict: Server) -> None:
    with connect(strict) as sock:
        started = time.monotonic()
        assert sock.recv(65536) == b""
        assert HEAD_DEADLINE_S * 0.9 < time.monotonic() - started < HEAD_DEADLINE_S + 3
    with connect(strict) as sock:
        sock.sendall(b"\r\n")  # line breaks before a request are allowed and do not start one
        assert sock.recv(65536) == b""


def test_a_keep_alive_client_with_short_pauses_keeps_its_connection(strict: Server) -> None:
    with connect(strict) as sock:
        for _ in range(4):  # 4 pauses of 0.6 s: longer than the deadline in all, shorter each
            time.sleep(HEAD_DEADLINE_S * 0.6)
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = read_response(sock)
            assert status == 200 and headers.get("connection") != "close"
        # Once a next head has begun, uvicorn's keep-alive timer is off: the deadline still counts from the response.
        drip(sock, b"GET /v1/health HTTP/1.1\r\n", lines=2, every=0.1)
        started = time.monotonic()
        assert_timed_out(*read_response(sock))
        assert time.monotonic() - started < HEAD_DEADLINE_S + 3
        assert closed_by_server(sock)
    with connect(strict) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(sock)[0] == 200
        started = time.monotonic()
        assert sock.recv(65536) == b""  # idle after a response: closed by the deadline, before uvicorn's 5 s
        assert time.monotonic() - started < HEAD_DEADLINE_S + 2


def test_a_websocket_outlives_the_head_deadline(strict: Server) -> None:
    with strict.client(strict.key) as http:
        token = http.post("/v1/ws/token").json()["token"]
    url = strict.url.replace("http://", "ws://", 1) + f"/v1/ws?token={token}"
    with websockets.sync.client.connect(url, open_timeout=10) as ws:
        for ping_id in ("a", "b"):
            time.sleep(HEAD_DEADLINE_S * 2)
            ws.send(json.dumps({"op": "ping", "id": ping_id}))
            while (message := json.loads(ws.recv(timeout=5)))["type"] != "pong":
                pass
            assert message["id"] == ping_id
