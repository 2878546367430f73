"""rt/webhooks/ssrf: a webhook goes over https to a public address, unless its host is one the operator allowed;
a refusal is a 400 naming the rule it breaks."""

from __future__ import annotations

import pytest

from rt.errors import WEBHOOK_URL_NOT_ALLOWED
from rt.webhooks.ssrf import Blocked, check_url, safe_addresses


class Resolver:
    """Answers names from a table and counts lookups; a name not in it does not resolve."""

    def __init__(self, **names: list[str]) -> None:
        self.names = {k.replace("_", "."): v for k, v in names.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        if host not in self.names:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return list(self.names[host])


async def refused(url: str, allow: tuple[str, ...] = (), resolver: Resolver | None = None) -> Blocked:
    with pytest.raises(Blocked) as caught:
        await check_url(url, allow, resolve=resolver or Resolver())
    assert caught.value.status == 400
    assert caught.value.code == WEBHOOK_URL_NOT_ALLOWED
    return caught.value


def rule(error: Blocked) -> str:
    return str(error.extra["details"]["rule"])


async def test_https_is_required() -> None:
    error = await refused("http://93.184.215.14/hook")
    assert rule(error) == "https"
    assert "https" in error.detail
    assert rule(await refused("ftp://93.184.215.14/hook")) == "https"


async def test_a_user_name_or_password_in_the_url_is_refused() -> None:
    assert rule(await refused("https://user:pass@93.184.215.14/hook")) == "userinfo"
    assert rule(await refused("https://user@93.184.215.14/hook")) == "userinfo"


async def test_a_url_without_a_host_or_with_a_bad_port_is_refused() -> None:
    assert rule(await refused("https:///hook")) == "host"
    assert rule(await refused("https://93.184.215.14:99999/hook")) == "url"
    assert rule(await refused("https://93.184.215.14/ho ok")) == "url"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "loopback"),
        ("[::1]", "loopback"),
        ("10.0.0.8", "private"),
        ("172.16.5.4", "private"),
        ("172.31.255.1", "private"),
        ("192.168.1.10", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link_local"),
        ("[fe80::1]", "link_local"),
        ("[fc00::1]", "private"),
        ("[fd12:3456::1]", "private"),
        ("[fd00:ec2::254]", "metadata"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:10.0.0.1]", "private"),
        ("[2002:7f00:1::]", "loopback"),  # 6to4 of 127.0.0.1
        ("[64:ff9b::a00:1]", "private"),  # NAT64 of 10.0.0.1
        ("0.0.0.0", "unspecified"),
        ("[::]", "unspecified"),
        ("100.64.0.1", "shared"),
        ("224.0.0.1", "multicast"),
        ("[ff02::1]", "multicast"),
    ],
)
async def test_literal_addresses_that_are_not_public_are_refused(host: str, expected: str) -> None:
    resolver = Resolver()
    error = await refused(f"https://{host}/hook", resolver=resolver)
    assert rule(error) == expected
    assert "Traceback" not in error.detail
    assert resolver.asked == []


async def test_a_name_resolving_to_loopback_is_refused_with_the_address_named() -> None:
    error = await refused("https://localhost/hook", resolver=Resolver(localhost=["127.0.0.1", "::1"]))
    assert rule(error) == "loopback"
    assert "127.0.0.1" in error.detail
    assert error.extra["details"]["host"] == "localhost"


async def test_the_real_resolver_finds_localhost_loopback() -> None:
    with pytest.raises(Blocked) as caught:
        await check_url("https://localhost:8443/hook", ())
    assert rule(caught.value) == "loopback"


async def test_a_name_with_any_private_address_is_refused() -> None:
    resolver = Resolver(hooks_example_com=["93.184.215.14", "10.1.2.3"])
    assert rule(await refused("https://hooks.example.com/x", resolver=resolver)) == "private"


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    assert rule(await refused("https://nowhere.invalid/x")) == "resolve"


async def test_public_addresses_are_accepted_without_any_lookup() -> None:
    resolver = Resolver()
    await check_url("https://93.184.215.14/hook", (), resolve=resolver)
    await check_url("https://[2606:4700::1]:8443/hook", (), resolve=resolver)
    await check_url("https://[::ffff:93.184.215.14]/hook", (), resolve=resolver)
    assert resolver.asked == []


async def test_a_public_name_is_accepted_on_any_port() -> None:
    resolver = Resolver(hooks_example_com=["93.184.215.14", "2606:4700::1"])
    await check_url("https://Hooks.Example.com:4443/rt?x=1", (), resolve=resolver)
    assert resolver.asked == ["hooks.example.com"]


async def test_allow_hosts_exempts_exactly_the_listed_host_in_any_case_even_over_http() -> None:
    resolver = Resolver(localhost=["127.0.0.1"], hooks_internal=["10.0.0.5"], other_internal=["10.0.0.6"])
    allow = ("127.0.0.1", "HOOKS.internal")
    await check_url("http://127.0.0.1:9000/hook", allow, resolve=resolver)
    await check_url("http://hooks.INTERNAL/hook", allow, resolve=resolver)
    await check_url("https://hooks.internal:8443/hook", allow, resolve=resolver)
    assert resolver.asked == []
    assert rule(await refused("http://localhost:9000/hook", allow, resolver)) == "https"
    assert rule(await refused("https://localhost:9000/hook", allow, resolver)) == "loopback"
    assert rule(await refused("https://other.internal/hook", allow, resolver)) == "private"
    assert rule(await refused("https://127.0.0.2/hook", allow, resolver)) == "loopback"
    assert rule(await refused("https://sub.hooks.internal/hook", allow, resolver)) == "resolve"


async def test_safe_addresses_answers_what_the_name_resolves_to_now() -> None:
    resolver = Resolver(hooks_example_com=["93.184.215.14"])
    assert await safe_addresses("hooks.example.com", 443, (), resolve=resolver) == ["93.184.215.14"]
    resolver.names["hooks.example.com"] = ["127.0.0.1"]  # the name was rebound since it was checked
    with pytest.raises(Blocked) as caught:
        await safe_addresses("hooks.example.com", 443, (), resolve=resolver)
    assert rule(caught.value) == "loopback"
    assert await safe_addresses("[2606:4700::1]", 443, (), resolve=resolver) == ["2606:4700::1"]
