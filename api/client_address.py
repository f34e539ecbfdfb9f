"""Which address a request came from, when the service runs behind reverse proxies or load balancers.

Behind a proxy the TCP peer is the proxy, so per-IP rate limits would put every resident in one
bucket. Each proxy appends the address it received the request from to ``X-Forwarded-For``. A
client can write anything into that header itself, so it is read only when the peer is one of the
configured trusted proxies, and only from the right: the first address that is not a trusted proxy
is the client. With no trusted proxies configured the header is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR blocks (``10.0.0.0/8``, ``::1``); a bad entry raises ``ValueError`` at start-up."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: Sequence[Network]) -> bool:
    return ip is not None and any(ip in network for network in proxies)


def is_trusted_proxy(address: str | None, proxies: Sequence[Network]) -> bool:
    """Whether ``address`` (a peer's, as text) is one of the trusted proxies; anything not an IP is not."""
    return address is not None and _trusted(_ip(address), proxies)


def is_loopback(address: str | None) -> bool:
    ip = _ip(address) if address is not None else None
    return ip is not None and ip.is_loopback


def client_address(peer: str | None, forwarded_for: Iterable[str], proxies: Sequence[Network]) -> str | None:
    """The client's address: the peer, or the nearest untrusted hop in ``X-Forwarded-For`` behind trusted proxies.

    A hop that is not an IP address at all stops the walk at the last trusted hop, so a broken proxy
    groups its requests under its own address rather than under a string a client chose.
    """
    if peer is None or not _trusted(_ip(peer), proxies):
        return peer
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",") if hop.strip()]
    nearest_trusted = peer
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            return nearest_trusted
        if not _trusted(ip, proxies):
            return hop
        nearest_trusted = hop
    return nearest_trusted
