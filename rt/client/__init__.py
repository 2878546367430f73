"""The rt Python SDK: `Client` for REST, `Stream` for a WebSocket session that reconnects and resumes.

async with Client("http://127.0.0.1:8080", api_key) as rt:
    await rt.place_order(symbol="BTC/USDT", side="buy", quantity=0.01)
    async for message in rt.stream("positions", "ticks:BTC/USDT"):
        ...

`Client([url1, url2, url3], api_key)` talks to several instances of one deployment and moves on to the next when one
fails (docs/sdk.md).
"""

from __future__ import annotations

from rt.client.rest import ApiError, Client, new_idempotency_key
from rt.client.stream import Stream
from rt.client.webhooks import WebhookVerificationError, verify

__all__ = ["ApiError", "Client", "Stream", "WebhookVerificationError", "new_idempotency_key", "verify"]
