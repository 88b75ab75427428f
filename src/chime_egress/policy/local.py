"""Destinations an egress proxy refuses: itself, and by default its own host and link.

A proxy client must not reach, through the proxy, what only the proxy host can reach: the
proxy's own listeners (its proxy ports, its metrics endpoint), the host's loopback services, and
link-local addresses (cloud metadata services live at 169.254.169.254). Squid refuses the same by
default (its `to_localhost` rule). Setups that need some of these (a test bed, a sidecar) allow
them by name with the `chime_local_destinations` option; the proxy's own listeners stay refused
whatever it says, as a request to them would loop back into the proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .ranges import IPAddress, IPNetwork

# Refused unless allowed: "this host" (0.0.0.0/8 and :: connect to the host itself on Linux),
# loopback, and link-local.
LOCAL_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(text)
    for text in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "::/128", "::1/128", "fe80::/10")
)
# Listening on one of these means listening on every address of the host.
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})

OPTION = "chime_local_destinations"


def parse_local_destinations(text: str) -> tuple[IPNetwork, ...]:
    """The option's value: comma-separated addresses or CIDRs inside the refused ranges.

    Raises ValueError naming the entry and the fix.
    """
    allowed: list[IPNetwork] = []
    for entry in (item.strip() for item in text.split(",")):
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=True)
        except ValueError as error:
            raise ValueError(
                f"{OPTION}: {entry!r} is not an address or CIDR ({error}); "
                "list them comma-separated, for example 127.0.0.2/32,::1"
            ) from None
        if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
            raise ValueError(f"{OPTION}: {entry!r} is an IPv4-mapped IPv6 range; write it as IPv4")
        if not any(
            network.version == local.version and network.subnet_of(local)  # type: ignore[arg-type]
            for local in LOCAL_NETWORKS
        ):
            raise ValueError(
                f"{OPTION}: {entry!r} is not a loopback, link-local or unspecified range, and "
                f"only those are refused ({', '.join(map(str, LOCAL_NETWORKS))}); remove it"
            )
        allowed.append(network)
    return tuple(allowed)


@dataclass(frozen=True)
class LocalDestinations:
    """Which destinations are refused, given the allowed exceptions."""

    allowed: tuple[IPNetwork, ...] = ()

    def refusal(
        self,
        address: IPAddress,
        port: int,
        listeners: Iterable[tuple[str, int]],
        is_local: Callable[[IPAddress], bool],
    ) -> str | None:
        """Why a connection to `address`:`port` is refused, or None.

        `listeners` are the (host, port) pairs the proxy listens on; `is_local` says whether an
        address belongs to this host (asked only for a port the proxy listens on).
        """
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # judged as the IPv4 address it is
        for host, listen_port in listeners:
            if port != listen_port:
                continue
            if host in _WILDCARDS:
                if is_local(address):
                    return f"{_join(address, port)} is the proxy's own listener"
            elif _same_address(host, address):
                return f"{_join(address, port)} is the proxy's own listener"
        for network in LOCAL_NETWORKS:
            if address in network and not any(address in allowed for allowed in self.allowed):
                return (
                    f"{_join(address, port)} is a {_kind(network)} address of the proxy's host "
                    f"or link (allow it with {OPTION} if this setup needs it)"
                )
        return None


def _same_address(host: str, address: IPAddress) -> bool:
    try:
        listening = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return listening == address


def _kind(network: IPNetwork) -> str:
    if network.is_loopback:
        return "loopback"
    if network.is_link_local:
        return "link-local"
    return "this-host"


def _join(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
