"""Where a webhook may be sent: https to a public address, unless the host is one the operator allowed.

Checked when an endpoint is created and again before every attempt, because a name that resolved to a public
address then may resolve to a private one now (DNS rebinding); the sender connects to the address checked here."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from rt.errors import WEBHOOK_URL_NOT_ALLOWED, BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port) -> the addresses it resolves to. loop.getaddrinfo by default; tests make a name resolve as they want.
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_S = 5.0
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT; Alibaba's metadata service lives here
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class Blocked(BadRequest):
    code = WEBHOOK_URL_NOT_ALLOWED


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_allowed(host: str, allow_hosts: Sequence[str]) -> bool:
    """Whether `host` is one the operator exempted (RT_WEBHOOK_ALLOW_HOSTS): exactly that name, any case."""
    name = _bare(host)
    return any(name == _bare(allowed) for allowed in allow_hosts)


def refusal(address: IPAddress) -> tuple[str, str] | None:
    """The rule a webhook to `address` would break, as (rule, in words), or None when it may go there."""
    if address in _METADATA:
        return "metadata", "a cloud metadata address"
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            found = refusal(embedded)
            return None if found is None else (found[0], f"{found[1]} (embedded in an IPv6 address)")
        if address in _LOCAL_NAT64:
            return "private", "a local-use NAT64 address"
    shared = isinstance(address, ipaddress.IPv4Address) and address in _SHARED
    for rule, words, broken in (
        ("unspecified", "an unspecified address", address.is_unspecified),
        ("loopback", "a loopback address", address.is_loopback),
        ("link_local", "a link-local address", address.is_link_local),
        ("multicast", "a multicast address", address.is_multicast),
        ("shared", "a shared address (100.64.0.0/10)", shared),
        ("private", "a private address", address.is_private),
        ("reserved", "a reserved address", address.is_reserved),
        ("not_global", "an address that is not globally routable", not address.is_global),
    ):
        if broken:
            return rule, words
    return None


async def check_url(url: str, allow_hosts: Sequence[str], *, resolve: Resolver = system_resolver) -> None:
    """Refuse (Blocked, 400) a webhook URL that is not https to a public address, naming the rule it breaks."""
    if len(url) > MAX_URL_LENGTH:
        raise _blocked(f"the URL is longer than {MAX_URL_LENGTH} characters", "url")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise _blocked("the URL contains whitespace or control characters", "url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise _blocked(f"the URL is not valid: {e}", "url") from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https"):
        raise _blocked("the URL must be https", "https")
    if not host:
        raise _blocked("the URL has no host", "host")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _blocked("the URL may not carry a user name or password", "userinfo")
    if is_allowed(host, allow_hosts):
        return
    if parts.scheme != "https":
        raise _blocked("the URL must be https", "https")
    await safe_addresses(host, port or 443, allow_hosts, resolve=resolve)


async def safe_addresses(
    host: str, port: int, allow_hosts: Sequence[str], *, resolve: Resolver = system_resolver
) -> list[str]:
    """The addresses `host` resolves to now, every one of them allowed; Blocked when any is not (or none is found).
    For a host in `allow_hosts`, what it resolves to, unchecked."""
    name = _bare(host)
    literal = _literal(name)
    if literal is not None:
        addresses = [literal]
    else:
        addresses = await _resolve(name, port, resolve)
    if is_allowed(host, allow_hosts):
        return [str(a) for a in addresses]
    if not addresses:
        raise _blocked(f"{name} does not resolve to any address", "resolve", host=name)
    for address in addresses:
        found = refusal(address)
        if found is not None:
            rule, words = found
            where = "is" if literal is not None else f"resolves to {address}, which is"
            raise _blocked(f"{name} {where} {words}", rule, host=name, address=str(address))
    return [str(a) for a in addresses]


async def _resolve(name: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            found = await resolve(name, port)
    except TimeoutError:
        raise _blocked(f"{name} did not resolve within {RESOLVE_TIMEOUT_S:g} s", "resolve", host=name) from None
    except OSError:
        raise _blocked(f"{name} does not resolve", "resolve", host=name) from None
    addresses: list[IPAddress] = []
    for text in found:
        address = _literal(text)
        if address is None:
            raise _blocked(f"{name} resolves to {text!r}, which is not an address", "resolve", host=name)
        addresses.append(address)
    return addresses


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _literal(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return ipaddress.IPv6Address(text.split("%", 1)[0])
    return address


def _bare(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _blocked(detail: str, rule: str, **more: str) -> Blocked:
    return Blocked(f"webhook URL refused: {detail}", details={"rule": rule, **more})
