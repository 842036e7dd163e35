"""The address guard's rules: which network addresses and hosts an outgoing request (a webhook,
a web push) may reach. Pure: the channels resolve a name once, ask here, and connect to the
very address that was checked (``channels.guarded_http``), so a name that resolves elsewhere
on a second lookup (DNS rebinding) never gets a second lookup.

Only globally routable unicast addresses are allowed by default. Everything else is refused:
loopback, private ranges, link-local (cloud metadata at 169.254.169.254), shared address space
(100.64.0.0/10, carrier-grade NAT), multicast, reserved and unspecified addresses, and IPv6
forms that carry one of those inside (IPv4-mapped, NAT64, 6to4). An operator opens specific
networks with a list (``MOMENTLY_WEBHOOK_ALLOW_NETWORKS='["10.0.0.0/8"]'``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# what the deprecated MOMENTLY_ALLOW_PRIVATE_WEBHOOKS=true still opens: loopback and private
# ranges, never link-local (where cloud metadata services answer)
LOOPBACK_AND_PRIVATE: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)

# the web push services browsers subscribe with; ``*.`` matches any subdomain
DEFAULT_PUSH_HOSTS: tuple[str, ...] = (
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "web.push.apple.com",
    "*.notify.windows.com",
)

_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``["10.0.0.0/8", "::1"]`` into networks; raises ValueError naming the bad entry."""
    out: list[Network] = []
    for v in values:
        try:
            out.append(ipaddress.ip_network(v.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{v!r} is not a network (use CIDR such as 10.0.0.0/8)") from None
    return tuple(out)


def _embedded(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, when it stands for one."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: Address) -> bool:
    """A globally routable unicast address, and not one in disguise."""
    inner = _embedded(ip)
    if inner is not None:  # an IPv6 form of an IPv4 address is judged as that address
        return is_public(inner)
    if not ip.is_global or ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return False
    # is_global already excludes shared address space; kept explicit, as the guard's promise
    return not (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED)


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Public addresses, plus the networks an operator opened explicitly."""

    allow: tuple[Network, ...] = ()

    @classmethod
    def of(cls, networks: Iterable[str]) -> AddressPolicy:
        return cls(parse_networks(networks))

    def allows(self, ip: Address) -> bool:
        for candidate in (ip, _embedded(ip)):
            if candidate is not None and any(
                candidate.version == n.version and candidate in n for n in self.allow
            ):
                return True
        return is_public(ip)

    def refused(self, addresses: Sequence[str]) -> str | None:
        """None when every address may be reached (all of them: a name that resolves to one
        public and one private address is refused), else the reason."""
        if not addresses:
            return "host_not_found"
        for text in addresses:
            try:
                ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
            except ValueError:
                return "address_not_allowed"
            if not self.allows(ip):
                return "address_not_allowed"
        return None


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    """``host`` is one of ``patterns`` (exact, case-insensitive), or a subdomain of a
    ``*.domain`` pattern."""
    host = host.lower().rstrip(".")
    for p in patterns:
        p = p.lower().rstrip(".")
        if p.startswith("*."):
            if host.endswith(p[1:]) and len(host) > len(p) - 1:
                return True
        elif host == p:
            return True
    return False
