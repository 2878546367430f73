"""End to end: the `rt` CLI on the data dir of a running `rt serve`, whose changes the server sees at once (SPEC §1)."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.checks import KEY_RE, LeakCheck, assert_problem
from tests.e2e.server import Server, cli, run_server
from tests.e2e.test_auth_e2e import READ_ONLY, get

pytestmark = pytest.mark.e2e

ISSUED_ID = re.compile(r"key id:\s+(key_\w+)")
ISSUED_SECRET = re.compile(r"signing secret:\s+(\S+)")


def run(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    result = cli(server.data_dir, *args)
    assert "Traceback" not in result.stderr + result.stdout
    return result


def rt(server: Server, *args: str) -> str:
    result = run(server, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rt_json(server: Server, *args: str) -> Any:
    return json.loads(rt(server, *args, "--json"))


def flips(check: Callable[[], bool], seconds: float = 2.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def header_line(table: str) -> list[str]:
    return table.splitlines()[0].split()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, leaks: LeakCheck) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("cli") / "data") as started:
        yield leaks.watch(started)


@pytest.fixture
def revoke_after(server: Server) -> Iterator[list[str]]:
    """Key ids to revoke after the test, so `default` stays under its 5-key limit."""
    ids: list[str] = []
    yield ids
    with server.client(server.key) as admin:
        for key_id in ids:
            admin.delete(f"/v1/keys/{key_id}")


@pytest.fixture
def cli_key(server: Server, leaks: LeakCheck, revoke_after: list[str]) -> dict[str, Any]:
    made: dict[str, Any] = rt_json(
        server, "keys", "create", "--account", "default", "--scopes", "read-only", "--tier", "pro"
    )
    revoke_after.append(made["id"])
    return leaks.issued(made)


def test_keys_create_json_prints_one_object_and_the_key_works_at_once(
    server: Server, leaks: LeakCheck, revoke_after: list[str]
) -> None:
    out = rt(server, "keys", "create", "--account", "default", "--scopes", "read-only", "--tier", "pro", "--json")
    made = leaks.issued(json.loads(out))
    revoke_after.append(made["id"])
    assert out.strip().count("\n") == 0, "one JSON object on one line"
    assert made["id"].startswith("key_")
    assert KEY_RE.fullmatch(made["key"])
    assert (made["scopes"], made["tier"]) == (READ_ONLY, "pro")
    response = get(server, made["key"])
    assert response.status_code == 200, response.text
    assert response.json()["key_id"] == made["id"]


def test_keys_list_shows_prefixes_never_keys(server: Server, cli_key: dict[str, Any]) -> None:
    out = rt(server, "keys", "list", "--json")
    listed = {k["id"]: k for k in json.loads(out)}
    assert listed[cli_key["id"]]["prefix"] == cli_key["key"][:12]
    assert listed[cli_key["id"]]["revoked_at"] is None
    table = rt(server, "keys", "list")
    assert header_line(table)[:4] == ["ID", "PREFIX", "NAME", "TIER"]
    assert "STATE" in header_line(table)
    assert any(line.startswith(cli_key["id"]) and "active" in line for line in table.splitlines())
    for shown in (out, table):
        assert cli_key["key"] not in shown
        assert cli_key["signing_secret"] not in shown


def test_key_revoked_by_the_cli_is_refused_by_the_running_server_within_a_second(
    server: Server, cli_key: dict[str, Any]
) -> None:
    assert get(server, cli_key["key"]).status_code == 200  # cached by the server now
    out = rt(server, "keys", "revoke", cli_key["id"])
    assert "revoked" in out and cli_key["id"] in out
    assert flips(lambda: get(server, cli_key["key"]).status_code == 401)
    assert_problem(get(server, cli_key["key"]), 401, "API_KEY_REVOKED")


def test_rotate_prints_a_new_key_that_replaces_the_old(
    server: Server, leaks: LeakCheck, cli_key: dict[str, Any], revoke_after: list[str]
) -> None:
    assert get(server, cli_key["key"]).status_code == 200
    out = rt(server, "keys", "rotate", cli_key["id"])
    new_key, new_id, new_secret = KEY_RE.search(out), ISSUED_ID.search(out), ISSUED_SECRET.search(out)
    assert new_key and new_id and new_secret, out
    revoke_after.append(new_id.group(1))
    leaks.secrets.update((new_key.group(0), new_secret.group(1)))
    assert new_key.group(0) != cli_key["key"]
    assert f"replaces {cli_key['id']}" in out
    response = get(server, new_key.group(0))
    assert response.status_code == 200, response.text
    assert response.json()["key_id"] == new_id.group(1)
    assert flips(lambda: get(server, cli_key["key"]).status_code == 401)
    assert_problem(get(server, cli_key["key"]), 401, "API_KEY_REVOKED")


def test_accounts_create_with_parent_and_list(server: Server, leaks: LeakCheck) -> None:
    name = f"desk-{uuid.uuid4().hex[:8]}"
    parent = rt_json(server, "accounts", "create", name)
    child = rt_json(server, "accounts", "create", f"{name}-child", "--parent", name)
    assert parent["id"].startswith("acct_") and parent["name"] == name and parent["parent_id"] is None
    assert child["id"].startswith("acct_") and child["parent_id"] == parent["id"]
    listed = {a["id"]: a for a in rt_json(server, "accounts", "list")}
    assert listed[child["id"]]["parent_id"] == parent["id"]
    assert {"default", name, f"{name}-child"} <= {a["name"] for a in listed.values()}
    table = rt(server, "accounts", "list")
    assert header_line(table) == ["ID", "NAME", "PARENT", "CREATED"]
    assert any(line.startswith(child["id"]) and parent["id"] in line for line in table.splitlines())

    # A key made for the child account works on the server and sees only that account's keys.
    made = leaks.issued(
        rt_json(server, "keys", "create", "--account", f"{name}-child", "--scopes", "full", "--tier", "starter")
    )
    assert made["account_id"] == child["id"]
    with server.client(made["key"]) as c:
        assert [k["id"] for k in c.get("/v1/keys").json()["keys"]] == [made["id"]]


def test_audit_shows_key_created_and_auth_failed(server: Server, cli_key: dict[str, Any]) -> None:
    with server.client(cli_key["key"]) as c:
        assert_problem(c.post("/v1/keys", json={"scopes": "full", "tier": "pro"}), 403, "INSUFFICIENT_SCOPE")
    entries: list[dict[str, Any]] = []

    def failure_written() -> bool:
        entries[:] = rt_json(server, "audit")
        return any(e["action"] == "auth.failed" and e["key_id"] == cli_key["id"] for e in entries)

    assert flips(failure_written, seconds=5)
    failed = next(e for e in entries if e["action"] == "auth.failed" and e["key_id"] == cli_key["id"])
    assert failed["detail"]["code"] == "INSUFFICIENT_SCOPE"
    assert failed["account_id"] == cli_key["account_id"] and failed["ip"] == "127.0.0.1"
    created = [e for e in entries if e["action"] == "key.created" and e["key_id"] == cli_key["id"]]
    assert len(created) == 1 and created[0]["detail"]["actor"] == "cli"
    table = rt(server, "audit")
    assert header_line(table)[:2] == ["AT", "ACTION"]
    assert "auth.failed" in table and "key.created" in table


CLI_ERRORS: list[tuple[list[str], str]] = [
    (["keys", "create", "--account", "nope", "--scopes", "full", "--tier", "pro"], "nope"),
    (["keys", "create", "--scopes", "bogus", "--tier", "pro"], "bogus"),
    (["keys", "create", "--scopes", "full", "--tier", "gold"], "gold"),
    (["keys", "create", "--scopes", "full", "--tier", "pro", "--allow-ips", "10.0.0.0/33"], "10.0.0.0/33"),
    (["keys", "revoke", "key_doesnotexist"], "key_doesnotexist"),
    (["keys", "rotate", "key_doesnotexist"], "key_doesnotexist"),
    (["accounts", "create", "default"], "default"),
    (["accounts", "create", "orphan", "--parent", "nope"], "nope"),
    (["audit", "--account", "nope"], "nope"),
]


def state(server: Server) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Keys (with their revocation) and accounts; last_used_at moves on its own, so it is left out."""
    keys = [(k["id"], k["revoked_at"]) for k in rt_json(server, "keys", "list")]
    return keys, [a["id"] for a in rt_json(server, "accounts", "list")]


def test_errors_exit_non_zero_with_a_readable_message_and_change_nothing(server: Server) -> None:
    before = state(server)
    for args, named in CLI_ERRORS:
        result = run(server, *args)
        assert result.returncode != 0, args
        assert result.stdout == "", args
        assert "Error" in result.stderr and named in result.stderr, (args, result.stderr)
    assert state(server) == before
