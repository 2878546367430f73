"""The rt Python SDK: `Client` for REST, `Stream` for a WebSocket session that reconnects and resumes.

async with Client("http://127.0.0.1:8080", api_key) as rt:
    await rt.place_order(symbol="BTC/USDT", side="buy", quantity=0.01)
    async for message in rt.stream("positions", "ticks:BTC/USDT"):
        ...
"""

from __future__ import annotations

from rt.client.rest import ApiError, Client
from rt.client.stream import Stream

__all__ = ["ApiError", "Client", "Stream"]
