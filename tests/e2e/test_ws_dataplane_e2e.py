"""The WebSocket data plane against a real `rt serve`: a client that stops reading is told 4008 and its connection
cut when it never answers the close; clients that close while events flow end quietly; a client that pipelines
requests gets every answer."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import orjson
import pytest

from rt.session.wire import CLOSE_TIMEOUT_S
from tests.e2e.server import Server, free_port, run_server
from tests.e2e.test_ws_e2e import ENV, connect, eventually, full_key, metrics

pytestmark = pytest.mark.e2e

SYMBOLS = [f"S{n:03d}/USDT" for n in range(200)]
BUSY = {
    **ENV,
    "RT_PAPER_TICK_MS": "5",
    "RT_PAPER_SYMBOLS": ",".join(f"{s}=100" for s in SYMBOLS),
    "RT_WS_STALL_S": "1",
    "RT_WS_MAX_PER_KEY": "1000",
}


def established(server_port: int, client_port: int) -> bool:
    """Whether the server still has a TCP connection to that client port (from /proc/net/tcp, IPv4 loopback)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return state == "01"
    return False


def quiet(server: Server) -> None:
    logs = server.logs()
    assert "Traceback" not in logs, logs[-3000:]
    assert '"level":"error"' not in logs, logs[-3000:]


async def test_a_client_that_stops_reading_is_told_4008_and_cut_when_it_never_answers(tmp_path: Path) -> None:
    port = free_port()
    with run_server(tmp_path / "data", {**BUSY, "RT_METRICS_PORT": str(port)}) as server:
        key = await full_key(server)
        stuck: list[socket.socket] = []
        async with connect(server, key) as healthy:
            await healthy.subscribe(f"ticks:{SYMBOLS[0]}")
            # Two clients stop reading: one will read again once it is closed, one never does.
            conns = []
            for _ in range(2):
                raw = socket.socket()
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                raw.connect(("127.0.0.1", server.port))
                stuck.append(raw)
                conns.append(connect(server, key, sock=raw, max_queue=1))
            async with conns[0] as reads_again, conns[1] as never:
                for conn in (reads_again, never):
                    for symbol in SYMBOLS:
                        await conn.send(op="subscribe", channel=f"ticks:{symbol}")
                closes = (await metrics(port))["rt_ws_slow_consumer_closes_total"]

                async def both_closed() -> bool:
                    await healthy.recv()
                    return (await metrics(port))["rt_ws_slow_consumer_closes_total"] >= closes + 2

                await eventually(both_closed, within=30)
                decided = time.monotonic()
                # Reading again, the first finds the close frame ahead of what it was never sent.
                assert await reads_again.close_code() == 4008
                # The other never answers the close: its connection is cut, no buffer left pinned for it.
                never_port = stuck[1].getsockname()[1]
                while established(server.port, never_port):
                    assert time.monotonic() - decided < CLOSE_TIMEOUT_S + 5, "the unanswered close was not cut"
                    await asyncio.sleep(0.1)
                # The healthy client never noticed.
                before = len(healthy.seqs(f"ticks:{SYMBOLS[0]}"))
                while len(healthy.seqs(f"ticks:{SYMBOLS[0]}")) < before + 20:
                    await healthy.recv()
                seqs = healthy.seqs(f"ticks:{SYMBOLS[0]}")
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        quiet(server)


async def test_clients_that_close_while_events_flow_end_quietly(tmp_path: Path) -> None:
    with run_server(tmp_path / "data", {**BUSY, "RT_PAPER_TICK_MS": "2"}) as server:
        key = await full_key(server)
        clients = []
        for _ in range(60):
            conn = connect(server, key)
            clients.append((conn, await conn.__aenter__()))
        for _, client in clients:
            for symbol in SYMBOLS[:20]:
                await client.send(op="subscribe", channel=f"ticks:{symbol}")
        for _, client in clients:
            await client.next("event")

        # All at once: a third close cleanly, a third drop the TCP connection, a third close and keep sending.
        async def leave(n: int, conn: object, client: object) -> None:
            if n % 3 == 1:
                client.kill()  # type: ignore[attr-defined]
            if n % 3 == 2:
                await client.send(op="ping", id=n)  # type: ignore[attr-defined]
            await conn.__aexit__(None, None, None)  # type: ignore[attr-defined]

        await asyncio.gather(*(leave(n, conn, client) for n, (conn, client) in enumerate(clients)))
        await asyncio.sleep(1.0)  # what the server does with the closes happens after the clients are gone
        async with connect(server, key) as still:
            await still.ping()
        quiet(server)


async def test_a_client_that_pipelines_1100_pings_gets_1100_pongs(tmp_path: Path) -> None:
    with run_server(tmp_path / "data", ENV) as server:
        await pipelined(server)


async def pipelined(server: Server) -> None:
    key = await full_key(server)
    async with connect(server, key) as conn:
        await conn.subscribe("orders")
        for n in range(1100):
            await conn.ws.send(orjson.dumps({"op": "ping", "id": n}).decode())
        pongs: list[int] = []
        while len(pongs) < 1100:
            message = await conn.recv(within=10)
            if message["type"] == "pong":
                pongs.append(message["id"])
        assert pongs == list(range(1100))
        await conn.ping()  # and the session is still open


async def test_a_shutdown_does_not_wait_on_a_client_that_stopped_reading(tmp_path: Path) -> None:
    # Stuck for longer than the test: only the shutdown can end it.
    with run_server(tmp_path / "data", {**BUSY, "RT_WS_STALL_S": "600", "RT_WS_QUEUE": "1000000"}) as server:
        key = await full_key(server)
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect(("127.0.0.1", server.port))
        async with connect(server, key, sock=raw, max_queue=1) as stuck:
            for symbol in SYMBOLS:
                await stuck.send(op="subscribe", channel=f"ticks:{symbol}")
            await asyncio.sleep(2.0)  # its buffers fill
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            await asyncio.get_running_loop().run_in_executor(None, server.process.wait, 30)
            took = time.monotonic() - started
        # The 2 s grace for queues to drain, then its close and, unanswered, the cut 3 s later.
        assert took < 2 + CLOSE_TIMEOUT_S + 3, took
        assert "timeout graceful shutdown exceeded" not in server.logs()
        quiet(server)
