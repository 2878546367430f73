"""End to end over real HTTP against `rt serve`: bootstrap, keys API, every auth error, rate limits, lockout,
request ids, proxies, signed bodies, bad input, and the Redis twin shared by two servers (SPEC §1-§4)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from tests.conftest import need_postgres, need_redis
from tests.e2e.checks import KEY_RE, PROBLEM_JSON, SECRET_LINE, LeakCheck, assert_problem
from tests.e2e.server import Server, cli, run_server
from tests.pg import database

pytestmark = pytest.mark.e2e

SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
JSON_TYPE = {"Content-Type": "application/json"}
USAGE = "/v1/account/usage"
READ_ONLY = [
    "account:read",
    "positions:read",
    "orders:read",
    "strategies:read",
    "risk:read",
    "market:read",
    "ws:connect",
]

# Small starter and pro budgets so rate limits show after a handful of requests; a huge pro_plus budget and
# lockout threshold so the bootstrap key and this module's many deliberate auth failures never trip either.
STARTER_PER_MINUTE, PRO_PER_MINUTE, PRO_PLUS_PER_MINUTE = 6, 120, 60000
MAIN_ENV = {
    "RT_TIER_LIMITS": f"starter={STARTER_PER_MINUTE}/3,pro={PRO_PER_MINUTE}/5,pro_plus={PRO_PLUS_PER_MINUTE}/10000",
    "RT_LOCKOUT_THRESHOLD": "100000",
}


class KeyFactory:
    """Keys made through the API for one test, revoked after it so the account stays under its 5-key limit."""

    def __init__(self, admin: httpx.Client, leaks: LeakCheck) -> None:
        self._admin = admin
        self._leaks = leaks
        self.ids: list[str] = []

    def create(
        self, scopes: str | list[str] = "full", tier: str = "pro", *, via: httpx.Client | None = None, **extra: Any
    ) -> dict[str, Any]:
        response = (via or self._admin).post("/v1/keys", json={"scopes": scopes, "tier": tier, **extra})
        assert response.status_code == 201, response.text
        return self.track(response.json())

    def track(self, body: dict[str, Any]) -> dict[str, Any]:
        self.ids.append(body["id"])
        return self._leaks.issued(body)

    def revoke_all(self) -> None:
        for key_id in self.ids:
            self._admin.delete(f"/v1/keys/{key_id}")


def assert_rate_headers(response: httpx.Response, per_minute: int) -> int:
    """Check the X-RateLimit-* headers; returns Remaining."""
    assert int(response.headers["x-ratelimit-limit"]) == per_minute
    reset = int(response.headers["x-ratelimit-reset"])
    now = time.time()
    assert now - 2 <= reset <= now + 61, f"X-RateLimit-Reset {reset} is not a unix time in the next minute"
    return int(response.headers["x-ratelimit-remaining"])


def sign(secret: str, body: bytes, t_ms: int) -> str:
    """X-RT-Signature as a client computes it, written here independently of rt's own helper."""
    mac = hmac.new(secret.encode(), f"{t_ms}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t_ms},v1={mac}"


def now_ms() -> int:
    return int(time.time() * 1000)


def get(server: Server, key: str | None, path: str = USAGE, **headers: str) -> httpx.Response:
    with server.client(key) as c:
        return c.get(path, headers=headers)


def key_names(admin: httpx.Client) -> list[str]:
    return [k["name"] for k in admin.get("/v1/keys", params={"limit": 500}).json()["keys"]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, leaks: LeakCheck) -> Iterator[Server]:
    with run_server(tmp_path_factory.mktemp("main") / "data", MAIN_ENV) as started:
        yield leaks.watch(started)


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[httpx.Client]:
    assert server.key is not None
    with server.client(server.key) as c:
        yield c


@pytest.fixture
def keys(admin: httpx.Client, leaks: LeakCheck) -> Iterator[KeyFactory]:
    factory = KeyFactory(admin, leaks)
    try:
        yield factory
    finally:
        factory.revoke_all()


@pytest.fixture(scope="module")
def other_key(server: Server, leaks: LeakCheck) -> dict[str, Any]:
    """A full key of a second account, made with the CLI on the running server's data dir."""
    made = cli(server.data_dir, "accounts", "create", "other", "--json")
    assert made.returncode == 0, made.stderr
    issued = cli(server.data_dir, "keys", "create", "--account", "other", "--scopes", "full", "--tier", "pro", "--json")
    assert issued.returncode == 0, issued.stderr
    return leaks.issued(json.loads(issued.stdout))


# bootstrap


def test_first_start_prints_one_key_to_stdout_and_a_restart_prints_none(tmp_path: Path, leaks: LeakCheck) -> None:
    data_dir = tmp_path / "data"
    with run_server(data_dir) as first:
        leaks.watch(first)
        assert first.key is not None
        assert KEY_RE.findall(first.stdout()) == [first.key]
        assert get(first, first.key, "/v1/keys").status_code == 200
    secret = SECRET_LINE.search(first.stdout())
    assert secret is not None
    assert first.key not in first.logs()
    assert secret.group(1) not in first.logs()
    for name in ("pepper", "secret.key"):
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name

    with run_server(data_dir) as second:
        leaks.watch(second)
        assert second.key is None
        assert KEY_RE.search(second.stdout()) is None
        # The pepper persisted, so the key printed on the first start still verifies.
        assert get(second, first.key, "/v1/keys").status_code == 200


def test_bootstrap_off_prints_no_key_and_creates_no_account(tmp_path: Path, leaks: LeakCheck) -> None:
    data_dir = tmp_path / "data"
    with run_server(data_dir, {"RT_BOOTSTRAP": "0"}) as started:
        leaks.watch(started)
        assert started.key is None
        assert KEY_RE.search(started.stdout()) is None
    listed = cli(data_dir, "accounts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


# auth errors


def test_no_key_is_401_api_key_missing(server: Server) -> None:
    assert_problem(get(server, None), 401, "API_KEY_MISSING")
    assert_problem(get(server, None, Authorization="Basic dXNlcjpwYXNz"), 401, "API_KEY_MISSING")
    assert_problem(get(server, None, Authorization="Bearer"), 401, "API_KEY_MISSING")


@pytest.mark.parametrize(
    "key",
    ["not-a-key", "rt_live_tooShort", "rt_prod_" + "a" * 32, "rt_live_" + "A" * 31 + "!", "rt_live_" + "A" * 32],
    ids=["garbage", "short", "bad-prefix", "bad-char", "unknown-well-formed"],
)
def test_bad_or_unknown_key_is_401_api_key_invalid(server: Server, key: str) -> None:
    assert_problem(get(server, None, **{"X-API-Key": key}), 401, "API_KEY_INVALID")
    assert_problem(get(server, None, Authorization=f"Bearer {key}"), 401, "API_KEY_INVALID")


def test_key_works_in_x_api_key_and_bearer(server: Server) -> None:
    assert server.key is not None
    for headers in ({"X-API-Key": server.key}, {"Authorization": f"Bearer {server.key}"}):
        response = get(server, None, "/v1/keys", **headers)
        assert response.status_code == 200, response.text
        assert response.json()["total"] >= 1


def test_revoked_key_is_401_api_key_revoked_at_once(server: Server, admin: httpx.Client, keys: KeyFactory) -> None:
    made = keys.create("read-only")
    assert get(server, made["key"]).status_code == 200  # now in the server's key cache too
    revoked = admin.delete(f"/v1/keys/{made['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert_problem(get(server, made["key"]), 401, "API_KEY_REVOKED")


def test_read_only_key_gets_403_insufficient_scope_on_key_routes(server: Server, keys: KeyFactory) -> None:
    reader = keys.create("read-only")
    assert reader["scopes"] == READ_ONLY
    with server.client(reader["key"]) as c:
        body = assert_problem(c.post("/v1/keys", json={"scopes": "full", "tier": "pro"}), 403, "INSUFFICIENT_SCOPE")
        assert "keys:manage" in body["detail"]
        assert_problem(c.get("/v1/keys"), 403, "INSUFFICIENT_SCOPE")
        assert c.get(USAGE).status_code == 200


def test_a_key_cannot_create_a_key_above_its_own_scopes_or_tier(server: Server, keys: KeyFactory) -> None:
    # Three requests: exactly the starter burst on this server.
    manager = keys.create(["keys:manage", "account:read"], "starter")
    with server.client(manager["key"]) as c:
        assert_problem(
            c.post("/v1/keys", json={"scopes": ["account:read"], "tier": "pro_plus"}), 403, "INSUFFICIENT_SCOPE"
        )
        assert_problem(c.post("/v1/keys", json={"scopes": "full", "tier": "starter"}), 403, "INSUFFICIENT_SCOPE")
        keys.create(["account:read"], "starter", via=c)


def test_ip_allowlist_refuses_other_addresses_and_ignores_spoofed_forwarding(server: Server, keys: KeyFactory) -> None:
    outside = keys.create("read-only", allow_ips="10.0.0.0/8")
    inside = keys.create("read-only", allow_ips="127.0.0.1/32")
    assert outside["allow_ips"] == ["10.0.0.0/8"]
    assert_problem(get(server, outside["key"]), 403, "IP_NOT_ALLOWED")
    assert get(server, inside["key"]).status_code == 200
    # No trusted proxy is configured, so a client cannot pick its own address.
    for spoof in ({"X-Forwarded-For": "10.1.1.1"}, {"X-Real-IP": "10.1.1.1"}, {"Forwarded": "for=10.1.1.1"}):
        assert_problem(get(server, outside["key"], **spoof), 403, "IP_NOT_ALLOWED")


def test_x_forwarded_for_is_believed_from_a_trusted_proxy(tmp_path: Path, leaks: LeakCheck) -> None:
    with run_server(tmp_path / "data", {"RT_TRUSTED_PROXIES": "127.0.0.1"}) as proxied:
        leaks.watch(proxied)
        with proxied.client(proxied.key) as admin:
            made = admin.post("/v1/keys", json={"scopes": "read-only", "tier": "pro", "allow_ips": "10.0.0.0/8"})
        assert made.status_code == 201, made.text
        key = leaks.issued(made.json())["key"]
        assert get(proxied, key, **{"X-Forwarded-For": "10.1.1.1"}).status_code == 200
        # The right-most hop not added by a trusted proxy is the client.
        assert get(proxied, key, **{"X-Forwarded-For": "203.0.113.9, 10.1.1.1"}).status_code == 200
        body = assert_problem(get(proxied, key, **{"X-Forwarded-For": "10.1.1.1, 203.0.113.9"}), 403, "IP_NOT_ALLOWED")
        assert "203.0.113.9" in body["detail"]
        assert_problem(get(proxied, key), 403, "IP_NOT_ALLOWED")


def test_x_forwarded_for_in_several_header_lines_is_read_as_one_list(tmp_path: Path, leaks: LeakCheck) -> None:
    # A proxy that appends its own X-Forwarded-For line (HAProxy's `option forwardfor`) leaves the client's own,
    # possibly forged, line first: the client is the right-most untrusted hop over every line, not the first line.
    with run_server(tmp_path / "data", {"RT_TRUSTED_PROXIES": "127.0.0.1"}) as proxied:
        leaks.watch(proxied)
        with proxied.client(proxied.key) as admin:
            made = admin.post("/v1/keys", json={"scopes": "read-only", "tier": "pro", "allow_ips": "10.0.0.0/8"})
        assert made.status_code == 201, made.text
        key = leaks.issued(made.json())["key"]
        with proxied.client(key) as c:
            forged = c.get(USAGE, headers=[("X-Forwarded-For", "10.1.1.1"), ("X-Forwarded-For", "203.0.113.9")])
            body = assert_problem(forged, 403, "IP_NOT_ALLOWED")
            assert "203.0.113.9" in body["detail"]
            real = c.get(USAGE, headers=[("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "10.1.1.1")])
            assert real.status_code == 200, real.text


def test_sixth_active_key_is_409_key_limit_reached(admin: httpx.Client, keys: KeyFactory) -> None:
    listed = admin.get("/v1/keys", params={"limit": 500}).json()["keys"]
    active = sum(1 for k in listed if k["revoked_at"] is None)
    assert active < 5
    for _ in range(5 - active):
        keys.create("read-only")
    body = assert_problem(
        admin.post("/v1/keys", json={"scopes": "read-only", "tier": "pro", "name": "sixth"}), 409, "KEY_LIMIT_REACHED"
    )
    assert "sixth" not in key_names(admin)
    assert "5" in body["detail"]
    assert admin.delete(f"/v1/keys/{keys.ids[-1]}").status_code == 200
    keys.create("read-only")  # a revoked key frees its slot


def test_lockout_after_repeated_bad_keys_refuses_even_a_good_key(tmp_path: Path, leaks: LeakCheck) -> None:
    env = {"RT_LOCKOUT_THRESHOLD": "3", "RT_LOCKOUT_WINDOW": "60", "RT_LOCKOUT_SECONDS": "60"}
    with run_server(tmp_path / "data", env) as started:
        leaks.watch(started)
        assert started.key is not None
        good, bad = {"X-API-Key": started.key}, {"X-API-Key": "rt_live_" + "x" * 32}
        with started.client() as c:
            for _ in range(2):
                assert_problem(c.get("/v1/keys", headers=bad), 401, "API_KEY_INVALID")
            assert c.get("/v1/keys", headers=good).status_code == 200  # below the threshold
            assert_problem(c.get("/v1/keys", headers=bad), 429, "IP_LOCKED_OUT")
            locked = c.get("/v1/keys", headers=good)
            assert_problem(locked, 429, "IP_LOCKED_OUT")
            assert 1 <= int(locked.headers["retry-after"]) <= 60
            assert_problem(c.get("/v1/keys", headers={"Authorization": f"Bearer {started.key}"}), 429, "IP_LOCKED_OUT")
            assert c.get("/v1/health").status_code == 200


# rate limits


def test_rate_limit_headers_count_down_and_429_carries_retry_after(server: Server, keys: KeyFactory) -> None:
    limited = keys.create("read-only", "starter")
    with server.client(limited["key"]) as c:
        remaining = []
        for _ in range(3):
            response = c.get(USAGE)
            assert response.status_code == 200, response.text
            remaining.append(assert_rate_headers(response, STARTER_PER_MINUTE))
        assert remaining == [2, 1, 0]
        refused = c.get(USAGE)
    body = assert_problem(refused, 429, "RATE_LIMITED")
    assert "starter" in body["detail"]
    assert assert_rate_headers(refused, STARTER_PER_MINUTE) == 0
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_every_authenticated_response_carries_rate_limit_headers(
    server: Server, admin: httpx.Client, keys: KeyFactory
) -> None:
    created = admin.post("/v1/keys", json={"scopes": "read-only", "tier": "pro"})
    assert created.status_code == 201
    reader = keys.track(created.json())
    answered = [
        admin.get("/v1/keys"),
        created,
        admin.post("/v1/keys", json={"scopes": "full"}),
        admin.delete("/v1/keys/key_doesnotexist"),
    ]
    assert [r.status_code for r in answered] == [200, 201, 400, 404]
    for response in answered:
        assert_rate_headers(response, PRO_PLUS_PER_MINUTE)
    with server.client(reader["key"]) as c:
        refused = c.get("/v1/keys")
    assert_problem(refused, 403, "INSUFFICIENT_SCOPE")
    assert_rate_headers(refused, PRO_PER_MINUTE)


def test_usage_counts_requests_auth_failures_and_rate_limits_of_the_calling_key(
    server: Server, keys: KeyFactory
) -> None:
    reader = keys.create("read-only", "pro")
    statuses: list[int] = []
    with server.client(reader["key"]) as c:
        assert_problem(c.post("/v1/keys", json={"scopes": "full", "tier": "pro"}), 403, "INSUFFICIENT_SCOPE")
        for _ in range(20):
            statuses.append(c.get(USAGE).status_code)
            if statuses[-1] == 429:
                break
        assert statuses[-1] == 429
        for _ in range(50):  # the pro bucket here refills one request every 0.5 s
            time.sleep(0.1)
            response = c.get(USAGE)
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
    assert response.status_code == 200, response.text
    usage = response.json()
    assert usage["key_id"] == reader["id"]
    assert usage["requests"] == 1 + len(statuses)
    assert usage["auth_failures"] == 1
    assert usage["rate_limited"] == statuses.count(429)
    assert set(statuses) == {200, 429}


# request ids


def test_sane_request_id_is_echoed_in_header_problem_and_logs(server: Server) -> None:
    sent = f"e2e-{uuid.uuid4().hex}.trace:1_2"
    response = get(server, None, **{"X-Request-ID": sent})
    assert response.headers["x-request-id"] == sent
    assert assert_problem(response, 401, "API_KEY_MISSING")["instance"] == sent
    deadline = time.monotonic() + 2
    while sent not in server.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sent in server.logs()


@pytest.mark.parametrize(
    "sent",
    ["x" * 500, "has spaces in it", "semi;colon", 'quote"d', ""],
    ids=["long", "spaces", "semi", "quote", "empty"],
)
def test_insane_request_id_is_replaced(server: Server, sent: str) -> None:
    response = get(server, None, **{"X-Request-ID": sent})
    replaced = response.headers["x-request-id"]
    assert replaced != sent
    assert SANE_ID.fullmatch(replaced)
    assert_problem(response, 401, "API_KEY_MISSING")


def test_request_ids_on_success_unknown_route_and_wrong_method(server: Server) -> None:
    with server.client() as c:
        ok = c.get("/v1/health")
        missing = c.get("/v1/no-such-route")
        wrong_method = c.put("/v1/health")
        wrong_method_keys = c.patch("/v1/keys")
    assert ok.status_code == 200
    assert SANE_ID.fullmatch(ok.headers["x-request-id"])
    assert_problem(missing, 404, "NOT_FOUND")
    assert_problem(wrong_method, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in wrong_method.headers["allow"]
    assert_problem(wrong_method_keys, 405, "METHOD_NOT_ALLOWED")
    ids = {r.headers["x-request-id"] for r in (ok, missing, wrong_method, wrong_method_keys)}
    assert len(ids) == 4


# signed bodies


def test_correctly_signed_body_is_accepted(server: Server, keys: KeyFactory) -> None:
    signer = keys.create("full", "pro")
    body = json.dumps({"scopes": "read-only", "tier": "starter", "name": "signed"}).encode()
    headers = {**JSON_TYPE, "X-RT-Signature": sign(signer["signing_secret"], body, now_ms())}
    with server.client(signer["key"]) as c:
        response = c.post("/v1/keys", content=body, headers=headers)
    assert response.status_code == 201, response.text
    assert keys.track(response.json())["name"] == "signed"


BAD_SIGNATURES: dict[str, Callable[[str, bytes, int], str]] = {
    "wrong-secret": lambda secret, body, t: sign(secret + "x", body, t),
    "other-body": lambda secret, body, t: sign(secret, body + b" ", t),
    "stale": lambda secret, body, t: sign(secret, body, t - 6 * 60 * 1000),
    "future": lambda secret, body, t: sign(secret, body, t + 6 * 60 * 1000),
    "seconds-not-ms": lambda secret, body, t: sign(secret, body, t // 1000),
    "malformed": lambda secret, body, t: "garbage",
    "no-timestamp": lambda secret, body, t: sign(secret, body, t).split(",", 1)[1],
    "no-mac": lambda secret, body, t: f"t={t}",
}


@pytest.mark.parametrize("case", list(BAD_SIGNATURES))
def test_wrong_stale_or_malformed_signature_is_401(
    server: Server, admin: httpx.Client, keys: KeyFactory, case: str
) -> None:
    signer = keys.create("full", "pro")
    name = f"must-not-exist-{case}"
    body = json.dumps({"scopes": "read-only", "tier": "starter", "name": name}).encode()
    headers = {**JSON_TYPE, "X-RT-Signature": BAD_SIGNATURES[case](signer["signing_secret"], body, now_ms())}
    with server.client(signer["key"]) as c:
        response = c.post("/v1/keys", content=body, headers=headers)
    assert_problem(response, 401, "REQUEST_SIGNATURE_INVALID")
    assert name not in key_names(admin)


# keys API


def test_create_returns_the_key_once_and_list_never_shows_it(admin: httpx.Client, keys: KeyFactory) -> None:
    made = keys.create("read-only", "pro", name="listing", allow_ips="127.0.0.1, 10.0.0.0/8")
    assert made["id"].startswith("key_")
    assert KEY_RE.fullmatch(made["key"])
    assert made["signing_secret"]
    assert (made["scopes"], made["tier"], made["name"]) == (READ_ONLY, "pro", "listing")
    assert made["allow_ips"] == ["127.0.0.1/32", "10.0.0.0/8"]
    assert made["created_at"].endswith("Z")

    response = admin.get("/v1/keys", params={"limit": 500})
    assert response.status_code == 200
    assert made["key"] not in response.text
    assert made["signing_secret"] not in response.text
    listed = next(k for k in response.json()["keys"] if k["id"] == made["id"])
    assert listed["prefix"] == made["key"][:12]
    assert {"id", "name", "prefix", "scopes", "tier", "allow_ips", "created_at", "last_used_at", "revoked_at"} <= set(
        listed
    )
    assert not {"key", "signing_secret", "digest"} & set(listed)


def test_list_paginates_with_limit_page_and_total(admin: httpx.Client, keys: KeyFactory) -> None:
    for _ in range(2):
        keys.create("read-only")
    total = admin.get("/v1/keys").json()["total"]
    assert total >= 3
    seen: list[str] = []
    for page in range(1, total // 2 + 2):
        body = admin.get("/v1/keys", params={"limit": 2, "page": page}).json()
        assert (body["total"], body["page"]) == (total, page)
        assert len(body["keys"]) == min(2, total - 2 * (page - 1))
        seen += [k["id"] for k in body["keys"]]
    assert len(seen) == len(set(seen)) == total
    assert set(keys.ids) <= set(seen)
    beyond = admin.get("/v1/keys", params={"limit": 2, "page": total}).json()
    assert beyond["keys"] == [] and beyond["total"] == total
    for params in ({"limit": 0}, {"limit": 501}, {"page": 0}, {"limit": "ten"}):
        body = assert_problem(admin.get("/v1/keys", params=params), 400, "BAD_REQUEST")
        assert {e["field"] for e in body["errors"]} == set(params)


def test_rotate_issues_a_new_key_with_the_same_settings_and_revokes_the_old(
    server: Server, admin: httpx.Client, keys: KeyFactory
) -> None:
    old = keys.create(["account:read", "orders:read"], "starter", name="rotating", allow_ips="127.0.0.1")
    assert get(server, old["key"]).status_code == 200
    response = admin.post(f"/v1/keys/{old['id']}/rotate")
    assert response.status_code == 201, response.text
    new = keys.track(response.json())
    assert new["id"] != old["id"] and new["key"] != old["key"] and KEY_RE.fullmatch(new["key"])
    for name in ("scopes", "tier", "allow_ips", "name", "test"):
        assert new[name] == old[name], name
    assert_problem(get(server, old["key"]), 401, "API_KEY_REVOKED")
    assert get(server, new["key"]).status_code == 200


def test_rotating_never_hands_a_key_more_than_it_holds(server: Server, admin: httpx.Client, keys: KeyFactory) -> None:
    """Rotation answers with the new key: a weaker key with keys:manage must not get a stronger key that way."""
    manager = keys.create(["keys:manage", "account:read"], "pro")
    stronger = keys.create(["keys:manage", "account:read", "orders:write"], "pro")
    higher_tier = keys.create(["account:read"], "pro_plus")
    with server.client(manager["key"]) as c:
        assert_problem(c.post(f"/v1/keys/{stronger['id']}/rotate"), 403, "INSUFFICIENT_SCOPE")
        assert_problem(c.post(f"/v1/keys/{higher_tier['id']}/rotate"), 403, "INSUFFICIENT_SCOPE")
    assert get(server, stronger["key"]).status_code == 200, "a refused rotation leaves the key working"
    assert get(server, higher_tier["key"]).status_code == 200


def test_another_accounts_key_is_404_and_untouched(
    server: Server, admin: httpx.Client, other_key: dict[str, Any]
) -> None:
    assert_problem(admin.delete(f"/v1/keys/{other_key['id']}"), 404, "NOT_FOUND")
    assert_problem(admin.post(f"/v1/keys/{other_key['id']}/rotate"), 404, "NOT_FOUND")
    assert other_key["id"] not in {k["id"] for k in admin.get("/v1/keys", params={"limit": 500}).json()["keys"]}
    with server.client(other_key["key"]) as c:
        assert c.get(USAGE).status_code == 200
        assert [k["id"] for k in c.get("/v1/keys").json()["keys"]] == [other_key["id"]]


def test_unknown_key_id_is_404(admin: httpx.Client) -> None:
    assert_problem(admin.delete("/v1/keys/key_doesnotexist"), 404, "NOT_FOUND")
    assert_problem(admin.post("/v1/keys/key_doesnotexist/rotate"), 404, "NOT_FOUND")


# bad input


def test_malformed_json_is_400(admin: httpx.Client) -> None:
    body = assert_problem(admin.post("/v1/keys", content=b'{"scopes": "full",', headers=JSON_TYPE), 400, "BAD_REQUEST")
    assert body["errors"][0]["field"] == "body"


def test_wrong_types_and_unknown_fields_are_400_naming_each_field(admin: httpx.Client) -> None:
    response = admin.post("/v1/keys", json={"scopes": "full", "tier": 5, "test": "sometimes", "colour": "red"})
    body = assert_problem(response, 400, "BAD_REQUEST")
    assert {e["field"] for e in body["errors"]} == {"tier", "test", "colour"}
    response = admin.post("/v1/keys", json={"scopes": ["account:read", "nope:nope"], "tier": "pro"})
    assert [e["field"] for e in assert_problem(response, 400, "BAD_REQUEST")["errors"]] == ["scopes"]
    response = admin.post("/v1/keys", json={"scopes": "full", "tier": "pro", "allow_ips": "10.0.0.0/33"})
    assert [e["field"] for e in assert_problem(response, 400, "BAD_REQUEST")["errors"]] == ["allow_ips"]


def test_body_over_one_mib_is_413(admin: httpx.Client) -> None:
    big = b'{"name": "' + b"x" * (1_153_434) + b'"}'  # 1.1 MiB
    assert_problem(admin.post("/v1/keys", content=big, headers=JSON_TYPE), 413, "PAYLOAD_TOO_LARGE")

    def chunked() -> Iterator[bytes]:
        yield big[:600_000]
        yield big[600_000:]

    assert_problem(admin.post("/v1/keys", content=chunked(), headers=JSON_TYPE), 413, "PAYLOAD_TOO_LARGE")


def test_text_plain_is_415_and_creates_nothing(admin: httpx.Client) -> None:
    body = json.dumps({"scopes": "read-only", "tier": "pro", "name": "plain-text"}).encode()
    response = admin.post("/v1/keys", content=body, headers={"Content-Type": "text/plain"})
    assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "plain-text" not in key_names(admin)


@pytest.mark.parametrize("body", [b"", b"   ", b"[]", b'[{"scopes": "full", "tier": "pro"}]', b"null", b'"full"'])
def test_empty_or_non_object_body_is_400(admin: httpx.Client, body: bytes) -> None:
    assert_problem(admin.post("/v1/keys", content=body, headers=JSON_TYPE), 400, "BAD_REQUEST")


GARBAGE_BODIES = [
    b"{",
    b"}{",
    b"\xff\xfe\x00",
    b"\x00" * 64,
    b"[" * 5000,
    b'{"a":' * 3000,
    b"123",
    b'{"scopes": "full"}',
    b'{"scopes": "full", "tier": "gold"}',
    b'{"scopes": "full", "tier": null}',
    b'{"scopes": ["nope"], "tier": "pro"}',
    b'{"scopes": [], "tier": "pro"}',
    b'{"scopes": "", "tier": "pro"}',
    b'{"scopes": {"a": 1}, "tier": "pro"}',
    b'{"scopes": "full", "tier": "pro", "allow_ips": "999.0.0.1"}',
    b'{"scopes": "full", "tier": "pro", "allow_ips": [5]}',
    b'{"scopes": "full", "tier": "pro", "name": "' + b"x" * 200 + b'"}',
    b'{"scopes": "full", "tier": "pro", "name": 1e400}',
    b'{"scopes": "full", "tier": "pro", "__proto__": {}}',
    b'{"tier": "pro", "tier": "platinum", "scopes": "full"}',
    b'{"scopes": "full", "tier": "pro", "test": [true]}',
]
ADMIN = "<the bootstrap key>"
GARBAGE_REQUESTS: list[tuple[str, str, dict[str, str | bytes], bytes | None]] = [
    ("GET", "/v1/keys", {"X-API-Key": b"\xff\xfe"}, None),
    ("GET", "/v1/keys", {"X-API-Key": ("rt_live_" + "\u00e9" * 32).encode()}, None),
    ("GET", "/v1/keys", {"Authorization": "Bearer " + "x" * 5000}, None),
    ("GET", "/v1/keys", {"Authorization": ("Bearer rt_live_" + "\u00e9" * 32).encode()}, None),
    ("GET", "/v1/keys", {"Authorization": "Bearer\tbearer rt_live_"}, None),
    ("GET", "/v1/keys?page=99999999999999999999999", {"X-API-Key": ADMIN}, None),
    ("GET", "/v1/keys?limit=-1&page=abc", {"X-API-Key": ADMIN}, None),
    ("GET", "/v1/keys?limit=%00", {"X-API-Key": ADMIN}, None),
    ("GET", "/v1/keys?unknown=1", {"X-API-Key": ADMIN}, None),
    ("DELETE", "/v1/keys/" + "x" * 5000, {"X-API-Key": ADMIN}, None),
    ("DELETE", "/v1/keys/%00%ff", {"X-API-Key": ADMIN}, None),
    ("POST", "/v1/keys/key_nope/rotate", {"X-API-Key": ADMIN}, None),
    ("POST", "/v1/keys", {"X-API-Key": ADMIN, "Content-Type": "application/"}, b'{"a": 1}'),
    ("POST", "/v1/keys", {"X-API-Key": ADMIN, "Content-Type": "application/xml"}, b"<xml/>"),
    ("POST", "/v1/keys", {"X-API-Key": ADMIN, "X-RT-Signature": "t=,v1=,t=1"}, b"{}"),
]


def raw_headers(headers: Mapping[str, str | bytes], admin_key: str) -> dict[bytes, bytes]:
    """As bytes, since some values are not text; ADMIN becomes the real key."""
    return {
        name.encode(): (admin_key if value == ADMIN else value).encode() if isinstance(value, str) else value
        for name, value in headers.items()
    }


def test_garbage_never_gets_a_500(server: Server) -> None:
    assert server.key is not None
    requests = [("POST", "/v1/keys", {"X-API-Key": ADMIN, **JSON_TYPE}, body) for body in GARBAGE_BODIES]
    with server.client() as c:
        for method, path, headers, content in requests + GARBAGE_REQUESTS:
            response = c.request(method, path, headers=raw_headers(headers, server.key), content=content)
            label = f"{method} {path[:60]} {str(headers)[:60]} {(content or b'')[:40]!r}"
            assert 400 <= response.status_code < 500, f"{label}: {response.status_code} {response.text[:200]}"
            assert response.headers["content-type"].startswith(PROBLEM_JSON), label
            assert response.json()["instance"] == response.headers["x-request-id"], label


# the Redis twin


async def test_two_servers_on_one_redis_share_a_rate_budget(tmp_path: Path, leaks: LeakCheck) -> None:
    redis_url = await need_redis()
    prefix = f"rt-e2e-{uuid.uuid4().hex[:12]}"
    try:
        # Two instances as operators run them: one PostgreSQL database, one Redis prefix, one pepper and secret key.
        async with database(await need_postgres()) as url:
            env = {
                "RT_DATABASE_URL": url,
                "RT_REDIS_URL": redis_url,
                "RT_REDIS_PREFIX": prefix,
                "RT_TIER_LIMITS": "starter=6/3",
                "RT_KEY_PEPPER": secrets.token_hex(32),
                "RT_SECRET_KEY": secrets.token_hex(32),
            }
            with (
                run_server(tmp_path / "a", env) as first,
                run_server(tmp_path / "b", {**env, "RT_BOOTSTRAP": "0"}) as second,
            ):
                leaks.watch(first)
                leaks.watch(second)
                with first.client(first.key) as admin:
                    made = admin.post("/v1/keys", json={"scopes": "read-only", "tier": "starter"})
                assert made.status_code == 201, made.text
                key = leaks.issued(made.json())["key"]
                answers = [get(server, key) for server in (first, second, first, second, first)]
                assert [r.status_code for r in answers] == [200, 200, 200, 429, 429]
                assert [int(r.headers["x-ratelimit-remaining"]) for r in answers[:3]] == [2, 1, 0]
                assert_problem(answers[3], 429, "RATE_LIMITED")
                assert int(answers[3].headers["retry-after"]) >= 1
    finally:
        client = aioredis.Redis.from_url(redis_url)
        try:
            stale = [k async for k in client.scan_iter(f"{prefix}:*")]
            if stale:
                await client.delete(*stale)
        finally:
            await client.aclose()
