"""Who is asking: the identity sources an allowlist chooses, and the identity they establish.

An identity is a user name and the groups it belongs to, compared without letter case (as
directories compare them). Where it comes from is configured under `identity:` in the allowlist
(parsed by `identity_config`), and the proxy establishes it (`chime_egress.proxy.identity`):
- `proxy_auth`: Basic proxy credentials, checked against an htpasswd file or an LDAP directory;
- `trusted_header`: a user (and groups) header set by an authenticating parent proxy, believed
  only from the parent's listed addresses;
- group membership from the directory (`memberOf` or a group search) and from a group file.

This module holds the settings and the pure checks (htpasswd verification, group file lookup);
nothing here does network I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import bcrypt

from .ranges import IPNetwork, parse_address

if TYPE_CHECKING:
    from .allowlist import App

PROXY_AUTH_HTPASSWD = "htpasswd"
PROXY_AUTH_LDAP = "ldap"
PROXY_AUTH_METHODS = (PROXY_AUTH_HTPASSWD, PROXY_AUTH_LDAP)

LDAP_GROUPS_MEMBER_OF = "member_of"
LDAP_GROUPS_SEARCH = "search"
LDAP_GROUPS_NONE = "none"
LDAP_GROUP_METHODS = (LDAP_GROUPS_MEMBER_OF, LDAP_GROUPS_SEARCH, LDAP_GROUPS_NONE)

DEFAULT_USER_HEADER = "X-Authenticated-User"
DEFAULT_CACHE_SECONDS = 300.0
DEFAULT_FAILURE_CACHE_SECONDS = 30.0
DEFAULT_LDAP_TIMEOUT_SECONDS = 3.0

# The hash formats checked here: bcrypt (`htpasswd -B`), and Apache's unsalted {SHA}, which
# mitmproxy 12's own htpasswd reader accepts too. MD5 ($apr1$) and crypt() are refused.
BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")
SHA_PREFIX = "{SHA}"


def fold(name: str) -> str:
    """The form user and group names are compared in: directories ignore letter case."""
    return name.strip().casefold()


@dataclass(frozen=True)
class Identity:
    """Who a request comes from, as established by the proxy."""

    user: str | None  # as given (for logs, when enabled); None: only groups are known
    groups: frozenset[str]  # folded
    source: str  # "proxy_auth" or "trusted_header"

    @cached_property
    def folded_user(self) -> str | None:  # asked for every entry matched: folded once
        return fold(self.user) if self.user is not None else None


@dataclass(frozen=True)
class IdentityEntry:
    """An `identities` entry: users and groups that get their own mode and, optionally, apps."""

    name: str
    users: frozenset[str]  # folded
    groups: frozenset[str]  # folded
    mode: str
    apps: tuple[App, ...] | None  # None: the top-level apps
    line: int


@dataclass(frozen=True)
class Htpasswd:
    """An htpasswd file's users and their password hashes (bcrypt or {SHA})."""

    path: Path
    hashes: Mapping[str, str] = field(repr=False)  # user name as written -> hash

    def check(self, user: str, password: str) -> bool:
        """Whether the password is the user's. Slow on purpose for bcrypt: call off the loop."""
        stored = self.hashes.get(user)
        if stored is None or not password:
            return False
        if stored.startswith(SHA_PREFIX):
            digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
            return hmac.compare_digest(stored[len(SHA_PREFIX) :], digest)
        try:
            return bcrypt.checkpw(password.encode(), stored.encode())
        except ValueError:  # a hash that parsed as bcrypt but is not one
            return False


@dataclass(frozen=True)
class GroupFile:
    """Group membership read from a YAML or CSV file: folded user -> folded groups."""

    path: Path
    memberships: Mapping[str, frozenset[str]] = field(repr=False)
    groups: frozenset[str]  # every group the file names, folded

    def groups_of(self, user: str | None) -> frozenset[str]:
        if user is None:
            return frozenset()
        return self.memberships.get(fold(user), frozenset())


@dataclass(frozen=True)
class LdapSettings:
    url: str  # ldap://host[:port] or ldaps://host[:port]
    bind_dn: str
    bind_password_file: Path
    bind_password: str = field(repr=False)  # compared: a changed password is a changed setting
    user_base: str
    user_attribute: str
    groups: str  # member_of | search | none
    group_base: str | None
    timeout_seconds: float


@dataclass(frozen=True)
class TrustedHeader:
    """Identity headers believed only from an authenticating parent proxy's addresses."""

    parents: tuple[IPNetwork, ...]
    user: str
    groups: str | None

    def is_parent(self, address: str) -> bool:
        parsed = parse_address(address)
        return parsed is not None and any(parsed in network for network in self.parents)


@dataclass(frozen=True)
class IdentitySettings:
    """The `identity:` section: which sources establish who is asking, and how long to trust."""

    proxy_auth: str | None  # htpasswd | ldap | None
    htpasswd: Htpasswd | None
    ldap: LdapSettings | None
    group_file: GroupFile | None
    trusted_header: TrustedHeader | None
    cache_seconds: float
    failure_cache_seconds: float
    log_users: bool
    line: int

    @property
    def ldap_groups(self) -> bool:
        return self.ldap is not None and self.ldap.groups != LDAP_GROUPS_NONE

    @property
    def files(self) -> tuple[Path, ...]:
        """Files read with the settings: an edit to any of them reloads the policy."""
        found: list[Path] = []
        if self.htpasswd is not None:
            found.append(self.htpasswd.path)
        if self.group_file is not None:
            found.append(self.group_file.path)
        if self.ldap is not None:
            found.append(self.ldap.bind_password_file)
        return tuple(found)
