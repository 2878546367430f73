"""Async REST client for rt, over one base URL or several instances of one deployment."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

if TYPE_CHECKING:
    from rt.client.stream import Stream

log = logging.getLogger("rt.client")

# Methods a server may run twice with no other effect than running them once.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# The request never left: no connection was made (refused, unreachable, name unknown) or none was free in time.
_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The instance failed to answer: refused, died mid-request, hung up, or too slow.
_FAILED = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


class ApiError(Exception):
    """An rt problem+json answer: `status`, `code` (stable, e.g. VALIDATION_FAILED), `detail` and the whole body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.code = str(problem.get("code", "UNKNOWN"))
        self.detail = str(problem.get("detail", ""))
        self.problem = problem
        super().__init__(f"{status} {self.code}: {self.detail}")


def new_idempotency_key() -> str:
    """A fresh Idempotency-Key, as the SDK makes for a write that names none."""
    return f"sdk-{uuid.uuid4().hex}"


class Client:
    """REST calls with an API key, to one base URL or to several instances of one deployment.

    `Client("http://a:8080", key)`, `Client(["http://a:8080", "http://b:8080"], key)` or
    `Client(urls=[...], api_key=key)`. Calls go to the current URL (`base_url`, the first at the start). When it
    refuses the connection, dies mid-request, hangs up or times out, the client moves on to the next URL (and stays
    there) and sends the call again, each URL once per call: a read always, a write only when it carries an
    `Idempotency-Key`, or when it never left (a refused connection). Every trading write of this class carries one:
    yours (`idempotency_key=`, or `client_order_id` in an order) or a fresh one per call, so a write retried on
    another instance trades once. When every URL has failed, the last `httpx.TransportError` is raised.
    """

    def __init__(
        self,
        base_url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        *,
        urls: Sequence[str] | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if base_url is not None and urls is not None:
            raise ValueError("give the base URL or urls=, not both")
        given = urls if urls is not None else base_url
        listed = [given] if isinstance(given, str) else list(given or ())
        if not listed or not all(isinstance(url, str) and url for url in listed):
            raise ValueError("a Client needs at least one base URL, like http://127.0.0.1:8080")
        if not api_key:
            raise ValueError("a Client needs an API key")
        self.urls: tuple[str, ...] = tuple(dict.fromkeys(url.rstrip("/") for url in listed))
        self._current = 0
        self._http = httpx.AsyncClient(headers={"X-API-Key": api_key}, timeout=timeout, transport=transport)

    @property
    def base_url(self) -> str:
        """The URL calls go to now: the first of `urls` until it fails."""
        return self.urls[self._current]

    def move_on(self, failed: str) -> str:
        """Make the URL after `failed` the current one, unless another call has moved on from it already (so calls
        failing together on one URL move once); returns the current URL."""
        if self.base_url == failed:
            self._current = (self._current + 1) % len(self.urls)
            if len(self.urls) > 1:
                log.info("moving on to the next instance", extra={"failed": failed, "next": self.base_url})
        return self.base_url

    def _rotation(self) -> list[str]:
        """Every URL once, from the current one on."""
        return [*self.urls[self._current :], *self.urls[: self._current]]

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        at: str | None = None,
    ) -> Any:
        """One call: the answer's JSON, or ApiError for a problem. `at` sends it to that URL alone (no moving on).

        A write without `idempotency_key` is sent to another URL only when it never left; pass a key (see
        `new_idempotency_key()`) to have it retried after an instance died with it."""
        method = method.upper()
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        repeatable = method in SAFE_METHODS or idempotency_key is not None
        return await self._call(method, path, json=json, params=params, headers=headers, repeatable=repeatable, at=at)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        repeatable: bool,
        at: str | None = None,
    ) -> Any:
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        order = [at.rstrip("/")] if at else self._rotation()
        for tried, url in enumerate(order, 1):
            try:
                response = await self._http.request(method, url + path, json=json, params=clean, headers=headers)
            except _FAILED as exc:
                if at is None:
                    self.move_on(url)
                if tried == len(order) or not (repeatable or isinstance(exc, _UNSENT)):
                    raise
                log.info("request failed, sending it to the next instance", extra={"error": type(exc).__name__})
                continue
            if response.status_code >= 400:
                try:
                    problem = response.json()
                except ValueError:
                    problem = {"code": "HTTP_ERROR", "detail": response.text[:200]}
                raise ApiError(response.status_code, problem)
            return response.json()
        raise AssertionError("unreachable: the last URL's failure is raised")

    async def _write(
        self, method: str, path: str, *, json: Any = None, idempotency_key: str | None = None, keyed: bool = True
    ) -> Any:
        """A trading write with an Idempotency-Key (the caller's or a fresh one), so it may be sent again elsewhere.
        `keyed=False` when the body carries its own key (an order's `client_order_id`), which a header would
        override."""
        key = idempotency_key or (new_idempotency_key() if keyed else None)
        headers = {"Idempotency-Key": key} if key else None
        return await self._call(method, path, json=json, headers=headers, repeatable=True)

    # account and market

    async def account(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/v1/account"))

    async def markets(self, exchange: str = "paper") -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/markets", params={"exchange": exchange}))["markets"])

    async def ticker(self, symbol: str, exchange: str = "paper") -> dict[str, Any]:
        path = f"/v1/markets/{quote(symbol, safe='')}/ticker"
        return dict(await self.request("GET", path, params={"exchange": exchange}))

    # positions

    async def positions(self, **filters: Any) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/positions", params=filters))["positions"])

    async def position(self, position_id: str) -> dict[str, Any]:
        return dict((await self.request("GET", f"/v1/positions/{position_id}"))["position"])

    async def open_position(self, *, idempotency_key: str | None = None, **body: Any) -> dict[str, Any]:
        answer = await self._write("POST", "/v1/positions", json=body, idempotency_key=idempotency_key)
        return dict(answer["position"])

    async def close_position(self, position_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        answer = await self._write("POST", f"/v1/positions/{position_id}/close", idempotency_key=idempotency_key)
        return dict(answer["position"])

    # orders

    async def orders(self, **filters: Any) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/orders", params=filters))["orders"])

    async def place_order(self, *, idempotency_key: str | None = None, **body: Any) -> dict[str, Any]:
        keyed = not body.get("client_order_id")
        answer = await self._write("POST", "/v1/orders", json=body, idempotency_key=idempotency_key, keyed=keyed)
        return dict(answer["order"])

    async def cancel_order(self, order_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        return dict((await self._write("DELETE", f"/v1/orders/{order_id}", idempotency_key=idempotency_key))["order"])

    # risk

    async def risk(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/v1/risk/envelope"))

    async def set_envelope(self, *, idempotency_key: str | None = None, **envelope: Any) -> dict[str, Any]:
        return dict(await self._write("PUT", "/v1/risk/envelope", json=envelope, idempotency_key=idempotency_key))

    async def kill(self, reason: str = "", *, idempotency_key: str | None = None) -> dict[str, Any]:
        body = {"reason": reason, "confirm": True}
        return dict(await self._write("POST", "/v1/emergency/kill", json=body, idempotency_key=idempotency_key))

    async def risk_command(
        self, action: str, account_id: str | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        body = {"action": action, **({"account_id": account_id} if account_id else {})}
        return dict(await self._write("POST", "/v1/risk/kill", json=body, idempotency_key=idempotency_key))

    # webhooks (docs/webhooks.md)

    async def create_webhook(self, url: str, events: Sequence[str] = ("*",), description: str = "") -> dict[str, Any]:
        """A new endpoint, with its `secret` (`whsec_…`): the only answer that shows it; keep it to verify deliveries
        (rt.client.webhooks.verify). Not retried elsewhere once it may have left: the server keeps no copy of the
        answer (it holds the secret), so list the endpoints to find one a lost answer made."""
        body = {"url": url, "events": list(events), "description": description}
        return dict(await self.request("POST", "/v1/webhooks", json=body))

    async def webhooks(self, *, limit: int | None = None, page: int | None = None) -> list[dict[str, Any]]:
        answer = await self.request("GET", "/v1/webhooks", params={"limit": limit, "page": page})
        return list(answer["webhooks"])

    async def webhook(self, webhook_id: str) -> dict[str, Any]:
        return dict(await self.request("GET", f"/v1/webhooks/{quote(webhook_id, safe='')}"))

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
        status: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Change what is given (None keeps it); `status="enabled"` turns a disabled endpoint back on. Returns the
        endpoint; its secret is unchanged."""
        changes = {"url": url, "events": None if events is None else list(events), "description": description}
        body = {k: v for k, v in {**changes, "status": status}.items() if v is not None}
        path = f"/v1/webhooks/{quote(webhook_id, safe='')}"
        return dict(await self._write("PATCH", path, json=body, idempotency_key=idempotency_key))

    async def delete_webhook(self, webhook_id: str) -> dict[str, Any]:
        return dict(await self.request("DELETE", f"/v1/webhooks/{quote(webhook_id, safe='')}"))

    async def rotate_webhook_secret(self, webhook_id: str) -> dict[str, Any]:
        """The endpoint with its new `secret`; the previous one keeps signing for 7 days."""
        path = f"/v1/webhooks/{quote(webhook_id, safe='')}/rotate-secret"
        return dict(await self.request("POST", path))

    async def test_webhook(self, webhook_id: str) -> dict[str, Any]:
        """Queue a `webhook.test` event for the endpoint; returns its delivery."""
        path = f"/v1/webhooks/{quote(webhook_id, safe='')}/test"
        return dict((await self.request("POST", path))["delivery"])

    async def webhook_deliveries(self, **filters: Any) -> list[dict[str, Any]]:
        """The delivery log, newest first: filters `endpoint_id`, `event`, `status`, `event_id`, `limit`, `page`."""
        return list((await self.request("GET", "/v1/webhooks/events", params=filters))["deliveries"])

    async def webhook_delivery(self, delivery_id: str) -> dict[str, Any]:
        path = f"/v1/webhooks/events/{quote(delivery_id, safe='')}"
        return dict((await self.request("GET", path))["delivery"])

    async def redeliver(self, delivery_or_event_id: str, *, idempotency_key: str | None = None) -> list[dict[str, Any]]:
        """Send a delivery (`whd_…`) again, or every delivery of an event (`evt_…`); returns them, due at once."""
        path = f"/v1/webhooks/events/{quote(delivery_or_event_id, safe='')}/redeliver"
        return list((await self._write("POST", path, idempotency_key=idempotency_key))["deliveries"])

    # streaming

    async def ws_token(self, *, at: str | None = None) -> str:
        """A single-use WebSocket token; `at` asks that URL alone. Asking again elsewhere is harmless (an unused
        token expires), so a failed request moves on like a read."""
        return str((await self._call("POST", "/v1/ws/token", repeatable=True, at=at))["token"])

    def stream(self, *channels: str, **options: Any) -> Stream:
        from rt.client.stream import Stream

        return Stream(self, channels, **options)
