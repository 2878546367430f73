"""End to end: the `rt` CLI on the data dir of a running `rt serve`, whose changes the server sees at once (SPEC §1)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.e2e.checks import KEY_RE, LeakCheck, assert_problem
from tests.e2e.server import Server, cli, free_port, run_server
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


def test_errors_under_json_are_one_json_object_on_stderr(server: Server) -> None:
    cases = [(args, named, "NOT_FOUND" if "nope" in args else None) for args, named in CLI_ERRORS]
    cases.append((["keys", "create", "--scopes", "full", "--tier", "gold"], "gold", "USAGE"))
    for args, named, code in cases:
        result = run(server, *args, "--json")
        assert result.returncode != 0, args
        assert result.stdout == "", args
        error = json.loads(result.stderr)["error"]
        assert set(error) == {"code", "message"}, (args, error)
        assert named in error["message"], (args, error)
        assert error["code"] and error["code"].upper() == error["code"], (args, error)
        if code is not None:
            assert error["code"] == code, (args, error)


def test_keys_list_active_is_what_the_api_lists_as_active(server: Server, cli_key: dict[str, Any]) -> None:
    rt(server, "keys", "revoke", cli_key["id"])
    listed = rt_json(server, "keys", "list", "--account", "default", "--active")
    assert cli_key["id"] not in {k["id"] for k in listed}
    with server.client(server.key) as admin:
        response = admin.get("/v1/keys", params={"active": "true", "limit": 500})
    assert response.status_code == 200, response.text
    assert sorted(k["id"] for k in response.json()["keys"]) == sorted(k["id"] for k in listed)
    assert all(k["revoked_at"] is None for k in listed)


def test_audit_is_newest_first_even_when_failures_are_written_late(server: Server, revoke_after: list[str]) -> None:
    """Auth failures are buffered for up to half a second; a key created meanwhile is written at once."""
    with server.client(server.key) as admin, server.client("rt_live_" + "0" * 32) as stranger:
        for _ in range(3):
            assert stranger.get("/v1/account").status_code == 401
            made = admin.post("/v1/keys", json={"scopes": "read-only", "tier": "pro"})
            assert made.status_code == 201, made.text
            revoke_after.append(made.json()["id"])
            admin.delete(f"/v1/keys/{made.json()['id']}")
    time.sleep(1.2)  # past the next flush of the buffered failures
    entries = rt_json(server, "audit", "--limit", "20")
    times = [e["at"] for e in entries]
    assert times == sorted(times, reverse=True), [(e["at"], e["action"]) for e in entries]
    assert {"auth.failed", "key.created", "key.revoked"} <= {e["action"] for e in entries}
    table = rt(server, "audit", "--limit", "20").splitlines()[1:]
    assert [line.split()[0] for line in table] == times


def test_data_dir_flag_after_the_command_and_what_a_missing_or_empty_dir_says(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    missing = elsewhere / "rt-data"

    # A read on a data dir that is not there names it and creates nothing.
    result = cli(missing, "keys", "list")
    assert result.returncode != 0 and result.stdout == ""
    assert str(missing.resolve()) in result.stderr and "RT_DATA_DIR" in result.stderr
    assert not missing.exists()

    # `--data-dir` after the command, as `rt serve --data-dir` takes it, wins over RT_DATA_DIR.
    listed = json.loads(cli(missing, "keys", "list", "--json", "--data-dir", str(server.data_dir)).stdout)
    assert server.key is not None and server.key[:12] in {k["prefix"] for k in listed}

    # A write starts a new data dir and says where; a list that finds nothing there says where it looked.
    made = cli(missing, "accounts", "create", "desk")
    assert made.returncode == 0, made.stderr
    assert f"new data dir at {missing.resolve()}" in made.stderr
    empty = cli(missing, "keys", "list", "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
    assert f"no keys in {missing.resolve()}" in empty.stderr
    quiet = cli(missing, "accounts", "list", "--json")
    assert [a["name"] for a in json.loads(quiet.stdout)] == ["desk"] and quiet.stderr == ""


def test_watch_an_unknown_channel_exits_non_zero_with_the_channels(server: Server) -> None:
    assert server.key is not None
    for extra in ([], ["--json"]):
        result = run(server, "watch", "positions", "bogus", "--key", server.key, "--url", server.url, *extra)
        assert result.returncode != 0 and result.stdout == ""
        for channel in ("bogus", "positions", "orders", "risk", "ticks:<SYMBOL>"):
            assert channel in result.stderr, result.stderr
        assert "connecting" not in result.stderr


def test_watch_a_wrong_port_says_what_it_tries_and_why_and_gives_up(server: Server) -> None:
    assert server.key is not None
    nothing = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = run(server, "watch", "positions", "--key", server.key, "--url", nothing, "--max-attempts", "3")
    assert time.monotonic() - started < 30
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"rt watch: connecting to {nothing}"), lines
    failures = [line for line in lines if "failed: cannot connect to" in line]
    assert [f.split(" failed")[0] for f in failures] == ["rt watch: attempt 1 of 3", "rt watch: attempt 2 of 3"]
    assert all("connection refused" in f and "retrying in" in f for f in failures), failures
    assert "gave up after 3 failed connection attempts" in lines[-1], lines

    # RT_URL is where it connects when --url is not given.
    by_env = cli(
        server.data_dir, "watch", "positions", "--max-attempts", "1", env={"RT_URL": nothing, "RT_KEY": server.key}
    )
    assert by_env.returncode != 0 and f"connecting to {nothing}" in by_env.stderr
    assert "gave up after 1 failed connection attempts" in by_env.stderr


def test_watch_streams_a_live_channel_and_stops_after_count(server: Server) -> None:
    assert server.key is not None
    result = run(server, "watch", "ticks:BTC/USDT", "--key", server.key, "--url", server.url, "--count", "2", "--json")
    assert result.returncode == 0, result.stderr
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    events = [m for m in messages if m["type"] == "event"]
    assert len(events) == 2 and all(m["channel"] == "ticks:BTC/USDT" for m in events)
    assert f"connecting to {server.url}" in result.stderr


def test_watch_a_channel_the_key_may_not_read_exits_non_zero(
    server: Server, leaks: LeakCheck, revoke_after: list[str]
) -> None:
    made = leaks.issued(rt_json(server, "keys", "create", "--scopes", "trade-only", "--tier", "pro"))
    revoke_after.append(made["id"])
    result = run(server, "watch", "positions", "--key", made["key"], "--url", server.url, "--json")
    assert result.returncode != 0
    error = json.loads(result.stderr.splitlines()[-1])["error"]
    assert error["code"] == "INSUFFICIENT_SCOPE" and "positions" in error["message"]


@pytest.mark.parametrize(
    ("channel", "code"),
    [("positions", "INSUFFICIENT_SCOPE"), ("ticks:NOPE/USDT", "BAD_REQUEST")],
    ids=["refused-scope", "unknown-symbol"],
)
@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_watch_a_refused_subscription_writes_the_error_to_stderr_and_nothing_to_stdout(
    server: Server, leaks: LeakCheck, revoke_after: list[str], channel: str, code: str | None, as_json: bool
) -> None:
    """stdout is the stream only, so `rt watch ... > file` (or `| jq`) never holds an error."""
    made = leaks.issued(rt_json(server, "keys", "create", "--scopes", "market:read,ws:connect", "--tier", "pro"))
    revoke_after.append(made["id"])
    extra = ["--json"] if as_json else []
    result = run(server, "watch", channel, "--key", made["key"], "--url", server.url, "--count", "1", *extra)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    last = result.stderr.splitlines()[-1]
    if as_json:
        error = json.loads(last)["error"]
        assert set(error) == {"code", "message"}, error
        assert channel in error["message"], error
        assert error["code"] == (code or error["code"]) and error["code"].isupper(), error
        assert '"type"' not in result.stderr, "the CLI's error format, not the server's frame"
    else:
        assert last.startswith("Error: ") and channel in last, result.stderr
        assert code is None or code in last, result.stderr


def test_watch_whose_key_is_revoked_says_so_on_stderr_and_exits_non_zero(
    server: Server, leaks: LeakCheck, revoke_after: list[str]
) -> None:
    made = leaks.issued(rt_json(server, "keys", "create", "--scopes", "read-only", "--tier", "pro"))
    revoke_after.append(made["id"])
    args = ["watch", "ticks:BTC/USDT", "--key", made["key"], "--url", server.url, "--json", "--max-attempts", "2"]
    env = {**os.environ, "RT_DATA_DIR": str(server.data_dir)}
    with subprocess.Popen(
        [sys.executable, "-m", "rt", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as watching:
        try:
            assert watching.stdout is not None
            first = json.loads(watching.stdout.readline())
            assert first["channel"] == "ticks:BTC/USDT", first
            rt(server, "keys", "revoke", made["id"])
            out, err = watching.communicate(timeout=30)
        finally:
            if watching.poll() is None:
                watching.kill()
    assert watching.returncode == 1, err
    assert all(json.loads(line)["type"] in ("event", "snapshot") for line in out.splitlines()), out
    assert "API_KEY_REVOKED" in err and "Traceback" not in err, err
    assert json.loads(err.splitlines()[-1])["error"]["code"] == "API_KEY_REVOKED", err


def test_keys_create_prints_the_key_on_stdout_and_the_reminder_on_stderr(
    server: Server, leaks: LeakCheck, revoke_after: list[str]
) -> None:
    result = run(server, "keys", "create", "--scopes", "read-only", "--tier", "pro")
    assert result.returncode == 0, result.stderr
    made_id, made_key = ISSUED_ID.search(result.stdout), KEY_RE.search(result.stdout)
    made_secret = ISSUED_SECRET.search(result.stdout)
    assert made_id and made_key and made_secret, result.stdout
    revoke_after.append(made_id.group(1))
    leaks.secrets.update((made_key.group(0), made_secret.group(1)))
    assert "not shown again" not in result.stdout and "not shown again" in result.stderr
