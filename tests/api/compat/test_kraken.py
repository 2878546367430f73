"""Kraken's GetWebSocketsToken against a real `rt serve`, through ccxt's kraken client and plain HTTP: the token it
issues opens rt's socket once; the key headers, bodies and error strings Kraken clients send and read."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ccxt
import httpx
import orjson
import pytest
import websockets

from rt.auth.guard import sign
from tests.api.compat._keys import issue_key
from tests.e2e.server import Server, run_server

pytestmark = pytest.mark.e2e

TOKEN = "/0/private/GetWebSocketsToken"
ENV = {"RT_PAPER_TICK_MS": "0", "RT_TIER_LIMITS": "pro_plus=100000/100000", "RT_LOCKOUT_THRESHOLD": "100000"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("kraken") / "data", ENV) as started:
        yield started


@dataclass(frozen=True)
class Key:
    key: str
    key_id: str
    signing_secret: str


async def new_key(
    server: Server, spec: str = "full", tier: str = "pro_plus", allow_ips: str | None = None, revoked: bool = False
) -> Key:
    """A key of a fresh account, made on the server's data dir; returned once the server knows it."""
    _, issued = await issue_key(server, "kr", spec, tier, allow_ips=allow_ips, revoked=revoked)
    return Key(issued.key, issued.record.id, issued.signing_secret)


def kraken(server: Server, key: str) -> ccxt.kraken:
    """ccxt's Kraken client, pointed at rt, with a secret of Kraken's form (base64) that rt does not check."""
    exchange = ccxt.kraken(
        {"apiKey": key, "secret": base64.b64encode(secrets.token_bytes(64)).decode(), "enableRateLimit": False}
    )
    exchange.urls["api"]["private"] = server.url
    return exchange


def post(server: Server, headers: dict[str, str] | None = None, content: bytes = b"") -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        return http.post(TOKEN, headers=headers or {}, content=content)


def kraken_error(response: httpx.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": [message]}


async def first_frames(url: str, messages: list[dict[str, Any]], count: int) -> list[dict[str, Any]]:
    async with websockets.connect(url) as ws:
        for message in messages:
            await ws.send(orjson.dumps(message).decode())
        frames: list[dict[str, Any]] = []
        while len(frames) < count:
            data = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            frames.extend(data if isinstance(data, list) else [data])
        return frames


def ws_url(server: Server, token: str) -> str:
    return server.url.replace("http://", "ws://") + f"/v1/ws?token={token}"


async def test_ccxt_fetches_a_token_that_opens_the_socket_once(server: Server) -> None:
    key = await new_key(server)
    answer = await asyncio.to_thread(kraken(server, key.key).privatePostGetWebSocketsToken)
    assert answer["error"] == [] and answer["result"]["expires"] == 900
    token = answer["result"]["token"]
    frames = await first_frames(ws_url(server, token), [{"op": "subscribe", "channel": "account", "id": 1}], 2)
    assert [f["type"] for f in frames][:2] == ["subscribed", "snapshot"]
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await first_frames(ws_url(server, token), [{"op": "ping", "id": 1}], 1)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001


def test_ccxt_reads_rts_refusals_as_kraken_errors(server: Server) -> None:
    with pytest.raises(ccxt.AuthenticationError):
        kraken(server, "rt_live_" + "y" * 32).privatePostGetWebSocketsToken()
    no_ws = asyncio.run(new_key(server, spec="orders:read"))
    with pytest.raises(ccxt.PermissionDenied):
        kraken(server, no_ws.key).privatePostGetWebSocketsToken()


@pytest.mark.parametrize(
    ("header", "content_type", "content"),
    [
        ("API-Key", None, b""),
        ("API-Key", "application/x-www-form-urlencoded", b"nonce=1733101234567"),
        ("API-Key", "application/x-www-form-urlencoded", b"nonce=1733101234567&otp=123456"),
        ("API-Key", None, b"nonce=1733101234567"),
        ("API-Key", "application/json", b'{"nonce": "1733101234567"}'),
        ("X-API-Key", "application/x-www-form-urlencoded", b"nonce=1"),
        ("Authorization", None, b""),
    ],
    ids=["empty", "form nonce", "form nonce and otp", "form without type", "json", "X-API-Key", "bearer"],
)
async def test_the_key_headers_and_bodies_kraken_clients_send_are_accepted(
    server: Server, header: str, content_type: str | None, content: bytes
) -> None:
    key = await new_key(server)
    headers = {header: f"Bearer {key.key}" if header == "Authorization" else key.key, "API-Sign": "bm90IGNoZWNrZWQ="}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await asyncio.to_thread(post, server, headers, content)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error"] == [] and set(body["result"]) == {"token", "expires"}
    frames = await first_frames(ws_url(server, body["result"]["token"]), [{"op": "ping", "id": 7}], 1)
    assert frames[0]["type"] == "pong"


async def test_a_missing_invalid_or_revoked_key_is_eapi_invalid_key(server: Server) -> None:
    gone = await new_key(server, revoked=True)
    kraken_error(post(server), 401, "EAPI:Invalid key")
    kraken_error(post(server, {"API-Key": "not-a-key"}), 401, "EAPI:Invalid key")
    kraken_error(post(server, {"API-Key": "rt_live_" + "z" * 32}), 401, "EAPI:Invalid key")
    kraken_error(post(server, {"API-Key": gone.key}), 401, "EAPI:Invalid key")


async def test_a_key_without_ws_connect_or_from_another_address_is_permission_denied(server: Server) -> None:
    no_ws = await new_key(server, spec="orders:read,positions:read")
    elsewhere = await new_key(server, allow_ips="192.0.2.0/24")
    kraken_error(post(server, {"API-Key": no_ws.key}), 403, "EGeneral:Permission denied")
    kraken_error(post(server, {"API-Key": elsewhere.key}), 403, "EGeneral:Permission denied")


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("application/x-www-form-urlencoded", b"nonce=\xff\xfe"),
        ("application/x-www-form-urlencoded", b"nonce"),
        ("application/json", b"[1, 2]"),
        ("application/json", b'{"nonce": '),
        ("text/plain", b"nonce=1"),
    ],
    ids=["not utf-8", "field without a value", "json not an object", "malformed json", "other media type"],
)
async def test_a_body_rt_cannot_read_is_invalid_arguments(server: Server, content_type: str, content: bytes) -> None:
    key = await new_key(server)
    response = await asyncio.to_thread(post, server, {"API-Key": key.key, "Content-Type": content_type}, content)
    kraken_error(response, 400, "EGeneral:Invalid arguments")


async def test_rts_own_body_signature_is_checked_when_sent(server: Server) -> None:
    key = await new_key(server)
    body = b"nonce=42"
    form = {"API-Key": key.key, "Content-Type": "application/x-www-form-urlencoded"}
    now = int(time.time() * 1000)
    good = await asyncio.to_thread(post, server, {**form, "X-RT-Signature": sign(key.signing_secret, now, body)}, body)
    assert good.status_code == 200, good.text
    forged = sign(key.signing_secret, now, b"nonce=43")
    kraken_error(post(server, {**form, "X-RT-Signature": forged}, body), 401, "EAPI:Invalid signature")


async def test_past_the_tiers_limit_it_is_eapi_rate_limit_exceeded_with_retry_after(server: Server) -> None:
    key = await new_key(server, tier="starter")
    async with httpx.AsyncClient(base_url=server.url, headers={"API-Key": key.key}, timeout=10) as http:
        for _ in range(30):
            response = await http.post(TOKEN)
            if response.status_code == 429:
                break
            assert response.status_code == 200, response.text
    kraken_error(response, 429, "EAPI:Rate limit exceeded")
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/0/private/Balance"),
        ("POST", "/0/private/AddOrder"),
        ("GET", "/0/public/Time"),
        ("DELETE", "/0/private/GetWebSocketsToken/extra"),
        ("POST", "/0/"),
    ],
)
async def test_a_method_rt_does_not_have_is_egeneral_unknown_method(server: Server, method: str, path: str) -> None:
    key = await new_key(server)
    # A body rt could not read as arguments: the unknown method is what the answer names.
    headers = {"API-Key": key.key, "Content-Type": "text/plain"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.request(method, path, headers=headers, content=b"nonce=\xff")
    kraken_error(response, 404, "EGeneral:Unknown method")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_another_method_on_the_token_path_is_405_unknown_method(server: Server, method: str) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        response = http.request(method, TOKEN)
    kraken_error(response, 405, "EGeneral:Unknown method")
    assert response.headers["allow"] == "POST"


def test_the_catch_all_is_served_not_documented(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        paths = http.get("/v1/openapi.json").json()["paths"]
    assert list(paths[TOKEN]) == ["post"]
    assert not [p for p in paths if p.startswith("/0/") and p != TOKEN]
