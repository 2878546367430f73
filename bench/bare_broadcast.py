"""The baseline for bench/ws_fanout.py: a bare `websockets` server that broadcasts rt-shaped ticks to every subscriber.

    .venv/bin/python bench/bare_broadcast.py --port 9000 [--tick-ms 10 | --rate 100] [--compression deflate|none]

No auth, no queues, no hub: a client's `subscribe` gets `subscribed` and `snapshot` back and joins the set that
`websockets.asyncio.server.broadcast()` writes each tick to. Ticks are made the way rt's paper feed makes them
(rt/exchanges/feed.py: deadlines on a fixed grid of RT_PAPER_TICK_MS, a step skipped rather than a burst when the
loop is more than one interval behind), so both servers offer the same load and fall behind the same way when
their event loop is busy. Prints `listening on <port>` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import resource
import time
from typing import Any

import orjson
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

SYMBOL = "BTC/USDT"
CHANNEL = f"ticks:{SYMBOL}"


class Ticks:
    """The same frame as rt's hub.event_frame(tick_json(ticker)): a random walk with a 1 bps spread."""

    def __init__(self) -> None:
        self.seq = 0
        self.last = 65000.0
        self._rng = random.Random(1)

    def data(self) -> dict[str, Any]:
        half = round(self.last * 0.00005, 1)
        return {
            "symbol": SYMBOL,
            "bid": round(self.last - half, 1),
            "ask": round(self.last + half, 1),
            "last": round(self.last, 1),
            "timestamp": int(time.time() * 1000),
        }

    def next_frame(self) -> str:
        self.seq += 1
        self.last *= math.exp(self._rng.gauss(0.0, 0.0005))
        message = {
            "type": "event",
            "channel": CHANNEL,
            "seq": self.seq,
            "event": "tick",
            "ts": time.time_ns() // 1000,
            "data": self.data(),
        }
        return orjson.dumps(message).decode()


async def main(port: int, interval: float, compression: str | None) -> None:
    subscribers: set[ServerConnection] = set()
    ticks = Ticks()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for raw in ws:
                message = orjson.loads(raw)
                if message.get("op") == "subscribe" and message.get("channel") == CHANNEL:
                    reply = {"type": "subscribed", "channel": CHANNEL, "id": message.get("id"), "seq": ticks.seq}
                    await ws.send(orjson.dumps(reply).decode())
                    snapshot = {"type": "snapshot", "channel": CHANNEL, "seq": ticks.seq, "data": ticks.data()}
                    await ws.send(orjson.dumps(snapshot).decode())
                    subscribers.add(ws)
        except ConnectionClosed:
            pass
        finally:
            subscribers.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=compression, max_size=64 * 1024):
        print(f"listening on {port}", flush=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += interval
            delay = deadline - loop.time()
            if delay < -interval:
                deadline = loop.time()
            await asyncio.sleep(max(delay, 0))
            broadcast(subscribers, ticks.next_frame())


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=100.0, help="ticks per second")
    parser.add_argument("--tick-ms", type=int, help="ms between ticks, as RT_PAPER_TICK_MS (overrides --rate)")
    parser.add_argument("--compression", choices=("deflate", "none"), default="deflate")
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tick_ms = args.tick_ms or max(1, round(1000 / args.rate))
    coro = main(args.port, tick_ms / 1000, None if args.compression == "none" else "deflate")
    try:
        import uvloop  # rt runs under uvloop (uvicorn's loop="auto"), so the baseline does too

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    run()
