"""rt/api/routing: the route pipeline on the in-process app — bounded bodies, the key before the body, and a client
that leaves mid-body."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.types import Message

from rt.app import create_app
from rt.runtime import Runtime
from tests.api.test_idempotency import full_key
from tests.crash import settings

INVALID_KEY = "rt_live_" + "A" * 32
DEEP = '"<deep>"'


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Starlette]:
    made = create_app(settings(tmp_path))
    async with made.router.lifespan_context(made):
        yield made


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rt.test") as client:
        yield client


@pytest.fixture
async def key(app: Starlette) -> str:
    runtime: Runtime = app.state.runtime
    return await full_key(runtime)


def deep_body(template: dict[str, Any], depth: int) -> bytes:
    """The template as JSON with its "<deep>" value replaced by a list nested `depth` times."""
    return orjson.dumps(template).replace(DEEP.encode(), b"[" * depth + b"1" + b"]" * depth)


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


# bounded bodies

STRATEGY = {"name": "g", "type": "grid", "symbol": "ETH/USDT", "config": {"levels": "<deep>"}}


@pytest.mark.parametrize(
    ("method", "path", "template", "idempotency"),
    [
        ("POST", "/v1/strategies", STRATEGY, "deep-1"),
        ("POST", "/v1/strategies", STRATEGY, None),
        ("POST", "/v1/emergency/kill", {"reason": "<deep>", "confirm": True}, "deep-2"),
        ("POST", "/v1/positions/pos_x/close", {"why": "<deep>"}, "deep-3"),
    ],
    ids=["strategy-with-key", "strategy", "kill-with-key", "bodyless-route-with-key"],
)
async def test_a_deeply_nested_body_is_a_400_problem_never_a_500(
    http: httpx.AsyncClient,
    key: str,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    template: dict[str, Any],
    idempotency: str | None,
) -> None:
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    if idempotency:
        headers["Idempotency-Key"] = idempotency
    answer = await http.request(method, path, content=deep_body(template, 300), headers=headers)
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["code"] == "BAD_REQUEST" and "too deep" in problem["detail"]
    assert not errors_logged(caplog)
    state = await http.get("/v1/account", headers={"X-API-Key": key})
    assert state.json()["trading_state"] == "active"


async def test_a_body_at_the_depth_limit_reaches_the_route(http: httpx.AsyncClient, key: str) -> None:
    # The body object, `config` and 30 lists: 32 levels. The grid refuses that config, not the parser.
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    answer = await http.post("/v1/strategies", content=deep_body(STRATEGY, 30), headers=headers)
    assert answer.status_code == 400, answer.text
    assert "too deep" not in answer.json()["detail"]
    deeper = await http.post("/v1/strategies", content=deep_body(STRATEGY, 31), headers=headers)
    assert "too deep" in deeper.json()["detail"]


# the key before the body


async def call(app: Starlette, method: str, path: str, headers: dict[str, str], receive: Any) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("rt.test", 80),
        "state": {},
    }
    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent


async def never() -> Message:
    """A client that sent its head and then nothing."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


@pytest.mark.parametrize(("key", "status"), [(INVALID_KEY, 401), (None, 401)], ids=["invalid-key", "no-key"])
async def test_a_bad_key_is_refused_before_the_body_arrives(app: Starlette, key: str | None, status: int) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": "100"}
    if key:
        headers["X-API-Key"] = key
    sent = await call(app, "POST", "/v1/orders", headers, never)
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == status


async def test_a_key_lacking_the_scope_is_refused_before_the_body_arrives(app: Starlette) -> None:
    runtime: Runtime = app.state.runtime
    account = await runtime.keys.create_account("reader")
    reader = (await runtime.keys.create(account.id, "read-only", "pro")).key
    headers = {"Content-Type": "application/json", "Content-Length": "100", "X-API-Key": reader}
    sent = await call(app, "POST", "/v1/orders", headers, never)
    assert sent[0]["status"] == 403


# a client gone mid-body


async def test_a_client_gone_mid_body_is_a_disconnect_not_a_500(
    app: Starlette, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    parts: list[Message] = [
        {"type": "http.request", "body": b'{"exchange": "paper", "sym', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return parts.pop(0) if parts else {"type": "http.disconnect"}

    headers = {"Content-Type": "application/json", "Content-Length": "200", "X-API-Key": key}
    sent = await call(app, "POST", "/v1/orders", headers, receive)
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] in ([], [499])
    assert not [m for m in sent if m.get("body")], "nothing is written for a client that is gone"
    assert not errors_logged(caplog)
    lines = [r for r in caplog.records if r.name == "rt.http"]
    assert [getattr(r, "status", None) for r in lines] == [499]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name.startswith("rt"))
