"""Client addresses: allowlists and the X-Forwarded-For rule (believed only from trusted proxies)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from rt.errors import BadRequest

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(items: Iterable[str], field: str = "allow_ips") -> tuple[Network, ...]:
    networks = []
    for item in items:
        try:
            networks.append(ipaddress.ip_network(item.strip(), strict=False))
        except ValueError:
            raise BadRequest(
                f"{item.strip()!r} is not an IP address or CIDR",
                errors=[{"field": field, "message": "IPv4/IPv6 addresses or CIDRs, comma-separated"}],
            ) from None
    return tuple(networks)


def normalize(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """'10.0.0.0/8, 2001:db8::1' or a list -> canonical CIDR strings."""
    if not spec:
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return tuple(str(n) for n in parse_networks(i for i in items if i.strip()))


def contains(networks: Sequence[Network], address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in networks)


def client_ip(peer: str | None, forwarded_for: str | Iterable[str] | None, trusted: Sequence[Network]) -> str:
    """The socket peer, unless it is a trusted proxy: then the right-most untrusted X-Forwarded-For hop.

    `forwarded_for` is the header's value or every one of its field lines in order (`headers.getlist`): a proxy that
    appends a line of its own instead of extending the client's leaves the real client in the last line, and the
    lines are one comma-separated list (RFC 9110 §5.3), so reading the first alone would believe the client's."""
    if peer is None:
        return "unknown"
    lines = [forwarded_for] if isinstance(forwarded_for, str) else list(forwarded_for or ())
    if not trusted or not lines or not contains(trusted, peer):
        return peer
    hops = [hop.strip() for line in lines for hop in line.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if not contains(trusted, hop):
            return hop
    return hops[0] if hops else peer
