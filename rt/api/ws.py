"""POST /v1/ws/token: a single-use token for GET /v1/ws (the API key itself is never accepted on the socket)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from rt.api import _errors
from rt.api.routing import Call, Operation
from rt.auth import scopes
from rt.auth.tokens import TOKEN_TTL


class WsToken(BaseModel):
    token: str
    expires: int = Field(description="Seconds the token stays valid (900). It works once.")


async def issue_token(call: Call) -> dict[str, Any]:
    token = await call.runtime.tokens.issue(call.caller)
    return {"token": token, "expires": TOKEN_TTL}


OPERATIONS = [
    Operation(
        "POST",
        "/v1/ws/token",
        issue_token,
        "A WebSocket token (single use, 15 minutes)",
        "websocket",
        scopes.WS_CONNECT,
        response=WsToken,
        errors=(*_errors.AUTH, "REQUEST_SIGNATURE_INVALID"),
        description='Open `GET /v1/ws?token=<token>` (or send `{"op": "auth", "token"}` first) '
        "within 15 minutes. The token carries the key's account, scopes and IP allowlist.",
    ),
]
