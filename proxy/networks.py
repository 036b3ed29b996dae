"""The peers a ``server.trusted_proxies`` value names: IP addresses and CIDR networks
separated by commas, or ``*``. Parsed when the config is checked and again by the ingress
(``forwarded.py``), which decides whose ``X-Forwarded-*`` headers count."""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(spec: str) -> list[Network] | None:
    """The networks of a ``server.trusted_proxies`` value (an address is a one-address
    network), ``None`` for ``*`` (every peer). Raises ValueError naming a bad entry."""
    entries = [entry.strip() for entry in spec.split(",") if entry.strip()]
    if entries == ["*"]:
        return None
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"{entry!r} is not an IP address or network; use addresses and CIDR "
                "networks separated by commas, or * alone"
            ) from None
    return networks
