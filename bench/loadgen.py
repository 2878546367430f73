"""A small HTTP/1.1 keep-alive load generator on raw asyncio streams (lighter than an HTTP client library)."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass


@dataclass
class Result:
    path: str
    requests: int
    seconds: float
    statuses: dict[int, int]
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self) -> str:
        return (
            f"{self.path:<24} {self.rps:9.0f} req/s   p50 {statistics.median(self.latencies_ms):6.2f} ms   "
            f"p99 {self.pct(0.99):6.2f} ms   statuses {dict(sorted(self.statuses.items()))}"
        )


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response with a Content-Length body; its status."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("the server closed the connection")
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def _worker(host: str, port: int, request: bytes, deadline: float, out: Result) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            out.latencies_ms.append((time.perf_counter() - started) * 1000)
            out.statuses[status] = out.statuses.get(status, 0) + 1
            out.requests += 1
    finally:
        writer.close()


async def hammer(host: str, port: int, path: str, headers: dict[str, str], connections: int, seconds: float) -> Result:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    result = Result(path, 0, seconds, {}, [])
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(_worker(host, port, request, deadline, result) for _ in range(connections)))
    result.seconds = time.perf_counter() - started
    return result
