"""rt/api/keys: GET /v1/keys filters on `active` as `rt keys list --active` does, and says so in the document."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from rt.app import create_app
from rt.config import Settings


@contextlib.asynccontextmanager
async def keys_api(data_dir: Path) -> AsyncIterator[tuple[httpx.AsyncClient, list[str], str]]:
    """A client with a full key, the ids of three keys of its account (the last one revoked) and the revoked id."""
    app = create_app(Settings(data_dir=str(data_dir), bootstrap=False, paper_tick_ms=0))
    async with app.router.lifespan_context(app):
        runtime = app.state.runtime
        account = await runtime.keys.create_account("desk")
        admin = await runtime.keys.create(account.id, "full", "pro_plus")
        other = await runtime.keys.create(account.id, "read-only", "pro")
        gone = await runtime.keys.create(account.id, "read-only", "pro")
        await runtime.keys.revoke(gone.record.id)
        transport = httpx.ASGITransport(app=app)
        headers = {"X-API-Key": admin.key}
        async with httpx.AsyncClient(transport=transport, base_url="http://rt.test", headers=headers) as http:
            yield http, [admin.record.id, other.record.id, gone.record.id], gone.record.id


async def test_active_true_lists_only_keys_that_are_not_revoked(tmp_path: Path) -> None:
    async with keys_api(tmp_path) as (http, ids, revoked):
        response = await http.get("/v1/keys", params={"active": "true"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert sorted(k["id"] for k in body["keys"]) == sorted(i for i in ids if i != revoked)
        assert all(k["revoked_at"] is None for k in body["keys"])
        assert body["total"] == 2 and body["page"] == 1


async def test_active_false_lists_only_revoked_keys_and_no_filter_lists_all(tmp_path: Path) -> None:
    async with keys_api(tmp_path) as (http, ids, revoked):
        only_revoked = (await http.get("/v1/keys", params={"active": "false"})).json()
        assert [k["id"] for k in only_revoked["keys"]] == [revoked] and only_revoked["total"] == 1
        everything = (await http.get("/v1/keys")).json()
        assert sorted(k["id"] for k in everything["keys"]) == sorted(ids)
        paged = (await http.get("/v1/keys", params={"active": "1", "limit": "1", "page": "2"})).json()
        assert len(paged["keys"]) == 1 and paged["total"] == 2 and paged["page"] == 2


async def test_active_that_is_not_a_boolean_is_a_400_naming_it(tmp_path: Path) -> None:
    async with keys_api(tmp_path) as (http, _, _):
        response = await http.get("/v1/keys", params={"active": "sometimes"})
        assert response.status_code == 400
        assert response.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in response.json()["errors"]] == ["active"]


def test_the_document_declares_active_as_a_boolean_query_parameter() -> None:
    document = create_app(Settings()).state.openapi
    params = {p["name"]: p for p in document["paths"]["/v1/keys"]["get"]["parameters"]}
    assert params["active"]["in"] == "query" and params["active"]["required"] is False
    assert params["active"]["schema"]["type"] == "boolean"


def test_the_document_lists_the_scope_names_post_keys_accepts() -> None:
    from rt.auth import scopes

    document = create_app(Settings()).state.openapi
    branches = document["components"]["schemas"]["KeyCreate"]["properties"]["scopes"]["anyOf"]
    as_list = next(b for b in branches if b.get("type") == "array")
    assert as_list["items"]["enum"] == [*scopes.PRESETS, *scopes.ALL] and as_list["minItems"] == 1
    pattern = re.compile(next(b for b in branches if b.get("type") == "string")["pattern"])
    for spec in ("full", "read-only", "orders:read, ws:connect", "trade-only,keys:manage"):
        assert pattern.search(spec), spec
        scopes.resolve(spec)
    for spec in ("", "admin", "full read-only", "orders:read;ws:connect"):
        assert not pattern.search(spec), spec
