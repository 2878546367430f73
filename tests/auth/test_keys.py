"""rt/auth/keys, with the scope presets (rt/auth/scopes) and tier table (rt/auth/tiers) a key carries."""

from __future__ import annotations

import re

import pytest

from rt.auth import keys, scopes, tiers
from rt.errors import BadRequest

SPEC_KEY = re.compile(r"rt_(live|test)_[0-9A-Za-z]{32}")


def test_generated_keys_have_the_documented_format() -> None:
    live, test = keys.generate(), keys.generate(test=True)
    assert SPEC_KEY.fullmatch(live) and live.startswith("rt_live_")
    assert SPEC_KEY.fullmatch(test) and test.startswith("rt_test_")
    assert keys.well_formed(live) and keys.well_formed(test)
    assert keys.display_prefix(live) == live[:12]


def test_generated_keys_are_unique() -> None:
    made = {keys.generate() for _ in range(1000)}
    assert len(made) == 1000
    # Every base62 character shows up: the alphabet is not accidentally narrowed.
    assert set("".join(k[8:] for k in made)) == set("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def test_signing_secrets_are_unique_and_not_keys() -> None:
    secrets = {keys.generate_signing_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert not any(keys.well_formed(s) for s in secrets)


GOOD = "rt_live_" + "aB3" * 10 + "xY"


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        GOOD[:-1],
        GOOD + "z",
        GOOD.replace("rt_live_", "rt_prod_"),
        GOOD.replace("rt_live_", "RT_LIVE_"),
        GOOD.replace("rt_live_", "rt_live"),
        GOOD.replace("rt_live_", "rtlive_"),
        GOOD[:-1] + "-",
        GOOD[:-1] + "_",
        GOOD[:-1] + "é",
        GOOD[:-1] + "٣",
        " " + GOOD,
        GOOD + "\n",
        GOOD + " ",
        "Bearer " + GOOD,
    ],
)
def test_well_formed_rejects_near_misses(candidate: str) -> None:
    assert keys.well_formed(GOOD)
    assert not keys.well_formed(candidate)


def test_key_hasher_depends_on_the_pepper() -> None:
    key = keys.generate()
    one, other = keys.KeyHasher(b"pepper-one"), keys.KeyHasher(b"pepper-two")
    assert one.digest(key) == one.digest(key)
    assert re.fullmatch(r"[0-9a-f]{64}", one.digest(key))
    assert one.digest(key) != other.digest(key)
    assert one.digest(key) != one.digest(keys.generate())
    assert key not in one.digest(key)


def test_key_hasher_matches() -> None:
    hasher = keys.KeyHasher(b"pepper")
    key = keys.generate()
    stored = hasher.digest(key)
    assert hasher.matches(key, stored)
    assert not hasher.matches(keys.generate(), stored)
    assert not hasher.matches(key, keys.KeyHasher(b"other").digest(key))
    assert not hasher.matches(key, "")


def test_scope_presets() -> None:
    read_only = scopes.resolve("read-only")
    assert set(read_only) == {s for s in scopes.ALL if s.endswith(":read")} | {"ws:connect"}
    assert "orders:write" not in read_only
    assert set(scopes.resolve("trade-only")) == {"positions:write", "orders:write", "market:read", "ws:connect"}
    assert scopes.resolve("full") == scopes.ALL
    assert len(scopes.ALL) == 14
    assert "alerts:manage" in scopes.resolve("full")


def test_scope_strings_and_lists_resolve_to_canonical_order() -> None:
    assert scopes.resolve("orders:write, account:read") == ("account:read", "orders:write")
    assert scopes.resolve("orders:write,,account:read,orders:write") == ("account:read", "orders:write")
    assert scopes.resolve(["ws:connect", "account:read"]) == ("account:read", "ws:connect")
    assert scopes.resolve(["trade-only", "keys:manage"]) == (*scopes.resolve("trade-only"), "keys:manage")


@pytest.mark.parametrize(
    "spec", ["orders:delete", "account:read,admin", ["account:read", "root"], "READ-ONLY", "", " , ", []]
)
def test_unknown_or_empty_scopes_are_bad_requests(spec: str | list[str]) -> None:
    with pytest.raises(BadRequest) as caught:
        scopes.resolve(spec)
    assert caught.value.status == 400
    assert caught.value.code == "BAD_REQUEST"
    assert caught.value.extra["errors"][0]["field"] == "scopes"


def test_default_tiers_match_the_spec() -> None:
    table = tiers.load()
    assert {(t.name, t.per_minute, t.burst) for t in table.values()} == {
        ("starter", 60, 10),
        ("b2b", 100, 20),
        ("pro", 120, 20),
        ("pro_plus", 300, 50),
    }
    assert table["starter"].rank < table["b2b"].rank < table["pro"].rank < table["pro_plus"].rank


def test_tier_overrides() -> None:
    table = tiers.load(["pro=600/40", " starter = 30 / 5 "])
    assert (table["pro"].per_minute, table["pro"].burst, table["pro"].rank) == (600, 40, 2)
    assert (table["starter"].per_minute, table["starter"].burst) == (30, 5)
    assert table["pro_plus"] == tiers.DEFAULT_TIERS["pro_plus"]
    # The defaults themselves are not changed by loading overrides.
    assert tiers.DEFAULT_TIERS["pro"].per_minute == 120


@pytest.mark.parametrize(
    "override", ["gold=600/40", "pro=600", "pro", "pro=abc/4", "pro=0/5", "pro=5/0", "pro=-1/5", "pro=6/4/2", "=1/1"]
)
def test_bad_tier_overrides_raise(override: str) -> None:
    with pytest.raises(ValueError):
        tiers.load([override])


def test_tier_check() -> None:
    assert tiers.check("pro") == "pro"
    with pytest.raises(BadRequest):
        tiers.check("enterprise")
