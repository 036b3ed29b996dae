"""Which peers may say who the client is: ``server.trusted_proxies``.

A request from a trusted proxy (a load balancer in front of the ingress) carries the
client's address in ``X-Forwarded-For`` and the original scheme in ``X-Forwarded-Proto``;
from any other peer those headers are ignored, so a client cannot pass for someone else.
"""

from __future__ import annotations

import ipaddress

from proxy.networks import trusted_networks

_SCHEMES = frozenset({"http", "https"})
_CACHE_MAX = 4096  # peers remembered (addresses are client input)


class TrustedProxies:
    """The peers in ``spec``: ``*`` (any), or comma-separated IP addresses and CIDR
    networks (:func:`proxy.networks.trusted_networks`; anything else raises ValueError)."""

    def __init__(self, spec: str) -> None:
        networks = trusted_networks(spec)
        self.any = networks is None
        self._networks = networks or []
        self._seen: dict[str, bool] = {}  # peer -> trusted, so each is parsed once

    def __contains__(self, host: str) -> bool:
        if self.any:
            return True
        trusted = self._seen.get(host)
        if trusted is None:
            trusted = self._trusts(host)
            if len(self._seen) < _CACHE_MAX:
                self._seen[host] = trusted
        return trusted

    def _trusts(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # not an address (a Unix socket peer): never a trusted proxy
        return any(address in network for network in self._networks)

    def client(self, x_forwarded_for: str) -> str | None:
        """The client named by an ``X-Forwarded-For`` value that a trusted peer sent: the
        nearest hop that is not itself a trusted proxy (proxies append, so the list is
        read from the right), or the first hop when every one is trusted."""
        hops = [_host_of(hop) for hop in x_forwarded_for.split(",")]
        hops = [hop for hop in hops if hop]
        if not hops:
            return None
        if not self.any:
            for hop in reversed(hops):
                if hop not in self:
                    return hop
        return hops[0]


def forwarded_scheme(x_forwarded_proto: str) -> str | None:
    """The scheme in an ``X-Forwarded-Proto`` value, when it is http or https."""
    scheme = x_forwarded_proto.split(",")[0].strip().lower()
    return scheme if scheme in _SCHEMES else None


def _host_of(hop: str) -> str:
    """The address of one hop: ``1.2.3.4``, ``1.2.3.4:80``, ``::1`` or ``[::1]:80``."""
    hop = hop.strip()
    if hop.startswith("["):
        return hop[1:].split("]", 1)[0]
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop
