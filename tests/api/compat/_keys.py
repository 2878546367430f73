"""Keys made on a running server's data dir, returned once that server knows them (or, revoked, refuses them)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import httpx

from rt.auth.manage import IssuedKey
from rt.config import Settings
from rt.runtime import open_runtime
from tests.e2e.server import Server


async def issue_key(
    server: Server,
    name: str,
    spec: str,
    tier: str,
    *,
    parent: str | None = None,
    allow_ips: str | None = None,
    revoked: bool = False,
) -> tuple[str, IssuedKey]:
    """A fresh account (a sub-account of `parent` when given) and one key of it: (account id, the issued key)."""
    async with open_runtime(Settings(data_dir=str(server.data_dir))) as runtime:
        account = await runtime.keys.create_account(f"{name}-{uuid.uuid4().hex[:10]}", parent_id=parent, actor="test")
        issued = await runtime.keys.create(account.id, spec, tier, allow_ips=allow_ips, actor="test")
    await _until(server, issued.key, lambda status: status != 401, "the new key did not reach the server")
    if revoked:
        async with open_runtime(Settings(data_dir=str(server.data_dir))) as runtime:
            await runtime.keys.revoke(issued.record.id, actor="test")
        # SPEC §1: a key revoked on the data dir is refused by the running server within a second.
        await _until(server, issued.key, lambda status: status == 401, "the revocation did not reach the server")
    return account.id, issued


async def _until(server: Server, key: str, done: Callable[[int], bool], message: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers={"X-API-Key": key}, timeout=10) as http:
        deadline = time.monotonic() + 5
        while not done((await http.get("/v1/account")).status_code):
            assert time.monotonic() < deadline, message
            await asyncio.sleep(0.05)
