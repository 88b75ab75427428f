"""Which settings apply to a client: who is asking first, then where from, then the top level.

The first `identities` entry naming the client's user or one of its groups applies; without
one, the first `networks` entry holding its address; else the top-level settings. Identity
goes first because it is the more specific fact: behind NAT or a shared terminal server many
people share one address. Each entry is compiled once into a ClientPolicy with its header lines
already rendered, so the per-connection work is one cached lookup and the per-request work stays
two assignments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from .allowlist import DEFAULT_NETWORK_NAME, ENFORCE, OBSERVE, Allowlist, App, header_input
from .headers import ChimeHeaders, build_headers
from .identity import Identity
from .ranges import IPAddress, IPNetwork, parse_address

# Clients of one proxy are a bounded population, but a scan must not grow the cache forever.
_CACHE_LIMIT = 65536
K = TypeVar("K")


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
    # An `identities` entry matches these (folded) names; both empty for networks and default.
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()

    @property
    def observing(self) -> bool:
        return self.mode == OBSERVE

    @property
    def kind(self) -> str:
        """How logs name the entry: "identity" for `identities`, else "network"."""
        return "identity" if self.users or self.groups else "network"

    def matches(self, identity: Identity) -> bool:
        user = identity.folded_user
        return (user is not None and user in self.users) or not self.groups.isdisjoint(
            identity.groups
        )

    def describe(self) -> str:
        if self.kind == "identity":
            who = [f"users {', '.join(sorted(self.users))}"] if self.users else []
            who += [f"groups {', '.join(sorted(self.groups))}"] if self.groups else []
            return f"identity {self.name} ({'; '.join(who)}), mode {self.mode}"
        where = f" ({', '.join(map(str, self.clients))})" if self.clients else ""
        return f"network {self.name}{where}, mode {self.mode}"

    def label(self) -> str:
        """The entry as the proxy's log names it: an identities entry by its name alone, since
        the people it lists are named in the log only with `identity.log_users`."""
        if self.kind == "identity":
            return f"identity {self.name}, mode {self.mode}"
        return self.describe()


def compile_client_policy(
    name: str,
    mode: str,
    apps: tuple[App, ...],
    clients: tuple[IPNetwork, ...] = (),
    line: int | None = None,
    users: frozenset[str] = frozenset(),
    groups: frozenset[str] = frozenset(),
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
        users=users,
        groups=groups,
    )


@dataclass(frozen=True)
class ClientPolicies:
    default: ClientPolicy
    networks: tuple[ClientPolicy, ...]
    identities: tuple[ClientPolicy, ...] = ()
    _cache: dict[str, ClientPolicy] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _identity_cache: dict[tuple[Identity, str], ClientPolicy] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def all(self) -> tuple[ClientPolicy, ...]:
        return (self.default, *self.identities, *self.networks)

    def select(self, identity: Identity | None, address: str) -> ClientPolicy:
        """The policy for who is asking (None: nobody known) from a source address."""
        if identity is None or not self.identities:
            return self.for_client(address)
        key = (identity, address)
        try:
            return self._identity_cache[key]
        except KeyError:
            found = next((p for p in self.identities if p.matches(identity)), None)
            return _remember(self._identity_cache, key, found or self.for_client(address))

    def for_client(self, address: str) -> ClientPolicy:
        """The policy for a client's source address (an IP literal; anything else: default)."""
        try:
            return self._cache[address]
        except KeyError:
            found = self._first_holding(parse_address(address)) if self.networks else self.default
            return _remember(self._cache, address, found)

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
    identities = tuple(
        compile_client_policy(
            entry.name,
            entry.mode,
            allowlist.apps if entry.apps is None else entry.apps,
            line=entry.line,
            users=entry.users,
            groups=entry.groups,
        )
        for entry in allowlist.identities
    )
    return ClientPolicies(default, networks, identities)


def _remember(cache: dict[K, ClientPolicy], key: K, found: ClientPolicy) -> ClientPolicy:
    """`found`, stored under `key`; a full cache starts again (bounded: clients choose keys)."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = found
    return found
