"""GET /v1/ready on the in-process app: every role this instance takes part in, and a failing check that names the
service and how it is reached (password masked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
from starlette.applications import Starlette

from rt.app import create_app
from rt.runtime import Runtime
from tests.conftest import need_postgres
from tests.crash import settings
from tests.faults import Proxy
from tests.pg import database


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[Starlette]:
    made = create_app(settings(tmp_path))
    async with made.router.lifespan_context(made):
        yield made


def client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rt.test")


async def test_ready_lists_the_dead_mans_switch_role_with_the_others(app: Starlette) -> None:
    runtime: Runtime = app.state.runtime
    async with client(app) as http:
        ready = await http.get("/v1/ready")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert body["status"] == "ok" and body["instance"] == runtime.instance_id
    assert set(body["checks"].values()) == {"ok"}
    assert "deadman" in body["roles"] and "market" in body["roles"], body["roles"]
    assert set(body["roles"]) == set(runtime.roles.snapshot()) | set(runtime.sessions.roles.snapshot())
    for role in body["roles"].values():
        assert set(role) == {"held", "token"}


async def test_a_failing_check_names_the_service_and_how_it_was_reached(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime: Runtime = app.state.runtime

    async def refused() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(runtime.limiter, "ping", refused)
    async with client(app) as http:
        ready = await http.get("/v1/ready")
    assert ready.status_code == 503
    checks = ready.json()["checks"]
    assert checks["limiter"] == "error: the in-process twin unreachable (ConnectionRefusedError)"
    assert checks["store"] == "ok" and checks["bus"] == "ok"


async def test_postgresql_lost_is_named_with_its_url_and_the_password_masked(tmp_path: Path) -> None:
    admin = await need_postgres()
    target = urlsplit(admin)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 5432).start()
    try:
        async with database(admin) as url:
            parts = urlsplit(url)
            # Trust authentication ignores the password, so the URL can carry one that must never be shown.
            via = urlunsplit(parts._replace(netloc=f"{parts.username}:s3cret-pw@{proxy.url_host}"))
            made = create_app(settings(tmp_path).replace(database_url=via))
            async with made.router.lifespan_context(made), client(made) as http:
                assert (await http.get("/v1/ready")).status_code == 200
                proxy.cut()
                ready = await http.get("/v1/ready")
                assert ready.status_code == 503
                assert "s3cret-pw" not in ready.text
                store = ready.json()["checks"]["store"]
                shown = urlunsplit(parts._replace(netloc=f"{parts.username}:***@{proxy.url_host}"))
                assert store.startswith(f"error: PostgreSQL at {shown} unreachable ("), store
                proxy.restore()
    finally:
        proxy.close()
