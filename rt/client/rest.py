"""Async REST client for rt."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

if TYPE_CHECKING:
    from rt.client.stream import Stream


class ApiError(Exception):
    """An rt problem+json answer: `status`, `code` (stable, e.g. VALIDATION_FAILED), `detail` and the whole body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.code = str(problem.get("code", "UNKNOWN"))
        self.detail = str(problem.get("detail", ""))
        self.problem = problem
        super().__init__(f"{status} {self.code}: {self.detail}")


class Client:
    """REST calls with an API key. Write calls take an optional `idempotency_key`."""

    def __init__(
        self, base_url: str, api_key: str, *, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers={"X-API-Key": api_key}, timeout=timeout, transport=transport
        )

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
    ) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        response = await self._http.request(method, path, json=json, params=clean, headers=headers)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"code": "HTTP_ERROR", "detail": response.text[:200]}
            raise ApiError(response.status_code, problem)
        return response.json()

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
        answer = await self.request("POST", "/v1/positions", json=body, idempotency_key=idempotency_key)
        return dict(answer["position"])

    async def close_position(self, position_id: str, *, idempotency_key: str | None = None) -> dict[str, Any]:
        answer = await self.request("POST", f"/v1/positions/{position_id}/close", idempotency_key=idempotency_key)
        return dict(answer["position"])

    # orders

    async def orders(self, **filters: Any) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/orders", params=filters))["orders"])

    async def place_order(self, *, idempotency_key: str | None = None, **body: Any) -> dict[str, Any]:
        answer = await self.request("POST", "/v1/orders", json=body, idempotency_key=idempotency_key)
        return dict(answer["order"])

    async def cancel_order(self, order_id: str) -> dict[str, Any]:
        return dict((await self.request("DELETE", f"/v1/orders/{order_id}"))["order"])

    # risk

    async def risk(self) -> dict[str, Any]:
        return dict(await self.request("GET", "/v1/risk/envelope"))

    async def set_envelope(self, **envelope: Any) -> dict[str, Any]:
        return dict(await self.request("PUT", "/v1/risk/envelope", json=envelope))

    async def kill(self, reason: str = "") -> dict[str, Any]:
        return dict(await self.request("POST", "/v1/emergency/kill", json={"reason": reason, "confirm": True}))

    async def risk_command(self, action: str, account_id: str | None = None) -> dict[str, Any]:
        body = {"action": action, **({"account_id": account_id} if account_id else {})}
        return dict(await self.request("POST", "/v1/risk/kill", json=body))

    # streaming

    async def ws_token(self) -> str:
        return str((await self.request("POST", "/v1/ws/token"))["token"])

    def stream(self, *channels: str, **options: Any) -> Stream:
        from rt.client.stream import Stream

        return Stream(self, channels, **options)
