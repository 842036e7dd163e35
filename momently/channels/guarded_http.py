"""Outgoing HTTP behind the address guard: the host name is resolved **once**, every address
it resolves to is checked (``domain.addresses``), and the connection goes to the checked
address, with the name kept for the ``Host`` header, TLS SNI and certificate checks. A name
that answers a public address to the check and a private one a moment later (DNS rebinding)
has no second moment.

urllib3 connection pools, one per (scheme, address, port, name), keep connections alive and are
safe to share between the dispatcher's send threads and between workspaces.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3

from momently.domain.addresses import AddressPolicy, host_allowed

# (host, port) -> the addresses it resolves to; injectable so tests can answer as a hostile
# DNS server would
Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Refused(Exception):
    """The guard said no; ``reason`` is the delivery's failure reason (never retried)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str
    address: str  # the checked address the connection goes to


class GuardedHttp:
    def __init__(
        self,
        policy: AddressPolicy,
        *,
        timeout: float = 5.0,
        hosts: Sequence[str] | None = None,
        resolver: Resolver = system_resolver,
        maxsize: int = 32,
    ) -> None:
        """``hosts``: when given, only these host names (``*.domain`` for subdomains) may be
        reached at all (web push: the known push services)."""
        self.policy = policy
        self.hosts = tuple(hosts) if hosts is not None else None
        self.resolver = resolver
        self.timeout = urllib3.Timeout(total=timeout)
        self.maxsize = maxsize
        self._pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
        self._lock = threading.Lock()

    def target(self, url: str, *, schemes: tuple[str, ...] = ("http", "https")) -> Target:
        """Resolve and check ``url``'s host; raises ``Refused``."""
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            raise Refused("invalid_url") from None
        if parts.scheme not in schemes or not parts.hostname:
            raise Refused("invalid_url")
        host = parts.hostname
        if self.hosts is not None and not host_allowed(host, self.hosts):
            raise Refused("host_not_allowed")
        port = port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = list(self.resolver(host, port))
        except (OSError, UnicodeError):
            raise Refused("host_not_found") from None
        reason = self.policy.refused(addresses)
        if reason is not None:
            raise Refused(reason)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return Target(parts.scheme, host, port, path, addresses[0])

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> urllib3.BaseHTTPResponse:
        """POST to the checked address; raises ``Refused`` or urllib3's errors. Redirects are
        not followed (a redirect could lead anywhere)."""
        t = self.target(url)
        default = 443 if t.scheme == "https" else 80
        host_header = t.host if t.port == default else f"{t.host}:{t.port}"
        if ":" in t.host and t.port == default:
            host_header = f"[{t.host}]"
        elif ":" in t.host:
            host_header = f"[{t.host}]:{t.port}"
        return self._pool(t).urlopen(
            "POST",
            t.path,
            body=body,
            headers={**headers, "Host": host_header},
            redirect=False,
            retries=False,
            assert_same_host=False,
        )

    def _pool(self, t: Target) -> urllib3.HTTPConnectionPool:
        key = (t.scheme, t.address, t.port, t.host)
        with self._lock:
            pool = self._pools.get(key)
            if pool is None:
                if t.scheme == "https":
                    pool = urllib3.HTTPSConnectionPool(
                        t.address,
                        t.port,
                        timeout=self.timeout,
                        maxsize=self.maxsize,
                        block=False,
                        retries=False,
                        server_hostname=t.host,  # SNI, and the name the certificate must carry
                        assert_hostname=t.host,
                    )
                else:
                    pool = urllib3.HTTPConnectionPool(
                        t.address,
                        t.port,
                        timeout=self.timeout,
                        maxsize=self.maxsize,
                        block=False,
                        retries=False,
                    )
                self._pools[key] = pool
            return pool

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), {}
        for p in pools:
            p.close()
