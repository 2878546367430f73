"""Auth overhead: requests/s of authenticated GETs against the unauthenticated /v1/health, on the real server.

    .venv/bin/python bench/auth_overhead.py [--seconds 5] [--connections 32] [--redis redis://127.0.0.1:6379/13]

Starts `rt serve` on a free port with a fresh data dir (tier limits raised so the limiter runs but never refuses),
then drives each route with keep-alive connections and prints requests/s, latency and the per-request overhead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadgen import Result, hammer
from tests.e2e.server import run_server


async def measure(port: int, key: str, seconds: float, connections: int) -> list[Result]:
    auth = {"X-API-Key": key}
    await hammer("127.0.0.1", port, "/v1/health", {}, connections, 1.0)  # warm-up
    return [
        await hammer("127.0.0.1", port, "/v1/health", {}, connections, seconds),
        await hammer("127.0.0.1", port, "/v1/account/key", auth, connections, seconds),
        await hammer("127.0.0.1", port, "/v1/account/usage", auth, connections, seconds),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--redis", default="", help="run with the Redis limiter twin at this URL")
    args = parser.parse_args()
    env = {"RT_TIER_LIMITS": "pro_plus=100000000/10000000", "RT_LOG_LEVEL": "warning"}
    if args.redis:
        env |= {"RT_REDIS_URL": args.redis, "RT_REDIS_PREFIX": "rt-bench"}
    with tempfile.TemporaryDirectory() as tmp, run_server(Path(tmp) / "data", env) as server:
        assert server.key, "no bootstrap key"
        results = asyncio.run(measure(server.port, server.key, args.seconds, args.connections))
    limiter = "redis" if args.redis else "memory"
    print(
        f"rt auth overhead: {args.connections} keep-alive connections, {args.seconds:.0f} s per route, "
        f"limiter={limiter}, log level warning"
    )
    for result in results:
        print(result.line())
    base = results[0]
    for result in results[1:]:
        overhead_us = (1 / result.rps - 1 / base.rps) * 1e6
        print(
            f"{result.path}: {result.rps / base.rps:.0%} of /v1/health throughput, "
            f"{overhead_us:+.0f} µs of server time per request"
        )


if __name__ == "__main__":
    main()
