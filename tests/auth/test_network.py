"""rt/auth/network: per-key allowlists and which address a request really came from."""

from __future__ import annotations

import pytest

from rt.auth.network import client_ip, contains, normalize, parse_networks
from rt.errors import BadRequest

ALLOW = parse_networks(["10.0.0.0/8", "192.0.2.7", "2001:db8:abcd::/48", "2001:db8::1"])
TRUSTED = parse_networks(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "10.255.255.255", "192.0.2.7", "2001:db8:abcd::1", "2001:db8:abcd:ffff::9", "2001:db8::1"],
)
def test_allowlist_contains(address: str) -> None:
    assert contains(ALLOW, address)


@pytest.mark.parametrize(
    "address",
    ["11.0.0.1", "192.0.2.8", "2001:db8:abce::1", "2001:db8::2", "::1", "127.0.0.1", "", "garbage", "10.0.0.1/32"],
)
def test_allowlist_refuses(address: str) -> None:
    assert not contains(ALLOW, address)


def test_ipv4_mapped_ipv6_matches_the_ipv4_entry() -> None:
    assert contains(ALLOW, "::ffff:10.1.2.3")
    assert contains(ALLOW, "::ffff:192.0.2.7")
    assert not contains(ALLOW, "::ffff:192.0.2.8")


def test_empty_allowlist_contains_nothing() -> None:
    assert not contains((), "10.0.0.1")


def test_normalize() -> None:
    assert normalize("10.1.2.3/8, 2001:db8::1 ,192.0.2.7") == ("10.0.0.0/8", "2001:db8::1/128", "192.0.2.7/32")
    assert normalize(["2001:DB8:0:0::/32"]) == ("2001:db8::/32",)
    assert normalize("10.0.0.0/8,,") == ("10.0.0.0/8",)
    assert normalize(None) == ()
    assert normalize("") == ()
    assert normalize([]) == ()


@pytest.mark.parametrize("spec", ["10.0.0.0/33", "10.0.0", "example.com", "2001:db8::/129", "10.0.0.1, nope"])
def test_bad_cidr_is_a_bad_request(spec: str) -> None:
    with pytest.raises(BadRequest) as caught:
        normalize(spec)
    assert caught.value.status == 400
    assert caught.value.extra["errors"][0]["field"] == "allow_ips"


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert client_ip("203.0.113.9", "1.2.3.4", TRUSTED) == "203.0.113.9"
    assert client_ip("203.0.113.9", "1.2.3.4, 10.0.0.2", TRUSTED) == "203.0.113.9"


def test_forwarded_for_is_ignored_without_trusted_proxies() -> None:
    assert client_ip("10.0.0.2", "1.2.3.4", ()) == "10.0.0.2"


def test_no_forwarded_for_means_the_peer() -> None:
    assert client_ip("10.0.0.2", None, TRUSTED) == "10.0.0.2"
    assert client_ip("10.0.0.2", "", TRUSTED) == "10.0.0.2"
    assert client_ip(None, "1.2.3.4", TRUSTED) == "unknown"


def test_trusted_proxy_yields_the_right_most_untrusted_hop() -> None:
    assert client_ip("10.0.0.2", "1.2.3.4", TRUSTED) == "1.2.3.4"
    # A client can prepend anything; only the hop our proxies saw counts.
    assert client_ip("10.0.0.2", "6.6.6.6, 1.2.3.4", TRUSTED) == "1.2.3.4"
    assert client_ip("10.0.0.2", "6.6.6.6, 1.2.3.4, 10.9.9.9", TRUSTED) == "1.2.3.4"
    assert client_ip("fd00::2", "2001:db8::5, fd00::7", TRUSTED) == "2001:db8::5"
    assert client_ip("::ffff:10.0.0.2", "1.2.3.4", TRUSTED) == "1.2.3.4"


def test_forwarded_for_lines_are_one_list_walked_from_the_right() -> None:
    # A client's own X-Forwarded-For line comes first; a proxy that appends a line of its own puts the real client
    # in the last one. The lines are one comma-joined list, so the forged first line is never believed.
    assert client_ip("10.0.0.2", ["6.6.6.6", "1.2.3.4"], TRUSTED) == "1.2.3.4"
    assert client_ip("10.0.0.2", ("6.6.6.6, 7.7.7.7", "1.2.3.4, 10.9.9.9"), TRUSTED) == "1.2.3.4"
    assert client_ip("10.0.0.2", ["10.0.0.5", "10.0.0.9"], TRUSTED) == "10.0.0.5"
    assert client_ip("10.0.0.2", ["1.2.3.4"], TRUSTED) == "1.2.3.4"
    assert client_ip("10.0.0.2", ["garbage", "1.2.3.4"], TRUSTED) == "1.2.3.4"
    assert client_ip("10.0.0.2", ["1.2.3.4", "garbage"], TRUSTED) == "10.0.0.2"
    assert client_ip("10.0.0.2", [], TRUSTED) == "10.0.0.2"
    assert client_ip("10.0.0.2", ["", " "], TRUSTED) == "10.0.0.2"
    assert client_ip("203.0.113.9", ["6.6.6.6", "1.2.3.4"], TRUSTED) == "203.0.113.9"


def test_forwarded_for_of_only_trusted_hops_yields_the_left_most() -> None:
    assert client_ip("10.0.0.2", "10.0.0.5, 10.0.0.9", TRUSTED) == "10.0.0.5"


@pytest.mark.parametrize("header", ["garbage", "1.2.3.4, garbage", "1.2.3.4:5678", "1.2.3.4, 10.0.0.9, junk"])
def test_garbage_forwarded_for_falls_back_to_the_peer(header: str) -> None:
    assert client_ip("10.0.0.2", header, TRUSTED) == "10.0.0.2"
