"""Which settings apply to a client: the first `networks` entry holding its address, else the top.

Each entry is compiled once into a ClientPolicy with its header lines already rendered, so the
per-connection work is one cached lookup and the per-request work stays two assignments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .allowlist import DEFAULT_NETWORK_NAME, ENFORCE, OBSERVE, Allowlist, App, header_input
from .headers import ChimeHeaders, build_headers
from .ranges import IPAddress, IPNetwork, parse_address

# Clients of one proxy are a bounded population, but a scan must not grow the cache forever.
_CACHE_LIMIT = 65536


@dataclass(frozen=True)
class ClientPolicy:
    name: str  # "default" for the top-level settings
    mode: str  # enforce | observe
    apps: tuple[App, ...]
    clients: tuple[IPNetwork, ...]  # empty for the default
    line: int | None  # where the networks entry starts; None for the default
    headers: ChimeHeaders | None  # None in observe mode, and with no apps
    http1_headers: tuple[tuple[str, str], ...]
    http2_headers: tuple[tuple[str, str], ...]

    @property
    def observing(self) -> bool:
        return self.mode == OBSERVE

    def describe(self) -> str:
        where = f" ({', '.join(map(str, self.clients))})" if self.clients else ""
        return f"network {self.name}{where}, mode {self.mode}"


def compile_client_policy(
    name: str,
    mode: str,
    apps: tuple[App, ...],
    clients: tuple[IPNetwork, ...] = (),
    line: int | None = None,
) -> ClientPolicy:
    headers = build_headers(header_input(apps)) if mode == ENFORCE and apps else None
    return ClientPolicy(
        name=name,
        mode=mode,
        apps=apps,
        clients=clients,
        line=line,
        headers=headers,
        http1_headers=headers.items() if headers else (),
        http2_headers=headers.items_lowercase() if headers else (),
    )


@dataclass(frozen=True)
class ClientPolicies:
    default: ClientPolicy
    networks: tuple[ClientPolicy, ...]
    _cache: dict[str, ClientPolicy] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def all(self) -> tuple[ClientPolicy, ...]:
        return (self.default, *self.networks)

    def for_client(self, address: str) -> ClientPolicy:
        """The policy for a client's source address (an IP literal; anything else: default)."""
        try:
            return self._cache[address]
        except KeyError:
            pass
        found = self._first_holding(parse_address(address)) if self.networks else self.default
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[address] = found
        return found

    def _first_holding(self, address: IPAddress | None) -> ClientPolicy:
        if address is not None:
            for policy in self.networks:
                if any(address in network for network in policy.clients):
                    return policy
        return self.default


def compile_client_policies(allowlist: Allowlist) -> ClientPolicies:
    default = compile_client_policy(DEFAULT_NETWORK_NAME, allowlist.mode, allowlist.apps)
    networks = tuple(
        compile_client_policy(
            network.name,
            network.mode,
            allowlist.apps if network.apps is None else network.apps,
            network.clients,
            network.line,
        )
        for network in allowlist.networks
    )
    return ClientPolicies(default, networks)
