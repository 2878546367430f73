"""Assertions the end-to-end modules share: problem+json bodies, and no secret in any server's logs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.e2e.server import Server

KEY_RE = re.compile(r"rt_(?:live|test)_[0-9A-Za-z]{32}")
SECRET_LINE = re.compile(r"signing secret \(shown only now\): (\S+)")
PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] and body["title"] and body["detail"]
    assert body["instance"] == response.headers["x-request-id"]
    return body


@dataclass
class LeakCheck:
    """Every key and signing secret this module saw, and every server whose logs must never contain one."""

    secrets: set[str] = field(default_factory=set)
    servers: list[Server] = field(default_factory=list)

    def issued(self, body: dict[str, Any]) -> dict[str, Any]:
        self.secrets.update((body["key"], body["signing_secret"]))
        return body

    def watch(self, server: Server) -> Server:
        self.servers.append(server)
        if server.key:
            self.secrets.add(server.key)
        match = SECRET_LINE.search(server.stdout())
        if match:
            self.secrets.add(match.group(1))
        return server

    def verify(self) -> None:
        assert self.servers and self.secrets
        for server in self.servers:
            logs = server.logs()
            assert '"msg":"request"' in logs, "no request log lines: the leak check would look at nothing"
            leaked = sorted(s[:12] for s in self.secrets if s in logs)
            assert not leaked, f"the logs of the server on port {server.port} hold secrets starting {leaked}"
