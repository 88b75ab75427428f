"""Inputs shared by the generated files: proxy addresses, ports, names, and the prefixes.

`chime-egress pac` and `chime-egress firewall` take the prefixes from the very PrefixTable the
proxy matches against (load_policy), so the browsers or the gateway send the proxy exactly the
addresses it treats as Chime, no more and no fewer. Nothing here imports mitmproxy.

Everything written into a generated file is checked whole (`re.fullmatch`: `$` would also match
before a final newline, and a name ending in one would split an nftables rule or a line of the
PAC file) or escaped (`source_comment`: the allowlist's path is any file name, newlines
included).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..errors import plural
from ..policy.compiled import Policy
from ..policy.ranges import IPNetwork
from ..untrusted import printable

# Each is used with fullmatch, never match: see the module's docstring.
_HOSTNAME = re.compile(
    r"(?=[A-Za-z0-9.-]{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
# shExpMatch patterns: host name characters and the wildcards * and ?.
_HOST_PATTERN = re.compile(r"[A-Za-z0-9*?.-]{1,253}")
# nftables interface names and user names, as they may appear unquoted in a rule.
_NFT_WORD = re.compile(r"[A-Za-z0-9_.-]{1,32}")


@dataclass(frozen=True)
class ProxyAddress:
    """HOST:PORT of a proxy; an IPv6 host is kept without its brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_proxy_address(text: str) -> ProxyAddress:
    """HOST:PORT or [IPV6]:PORT; raises ValueError saying what is wrong."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{text!r}: expected HOST:PORT")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address in brackets, [{host}]:{port_text}")
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"{text!r}: {host!r} is not a host name or IPv4 address")
    port = parse_port(port_text, text)
    return ProxyAddress(host, port)


def parse_port(text: str, context: str | None = None) -> int:
    where = f"{context!r}: " if context is not None else ""
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(f"{where}{text!r} is not a port number (1 to 65535)")
    return int(text)


def parse_ports(text: str) -> tuple[int, ...]:
    """A comma-separated list of ports, e.g. 80,443; duplicates removed, order kept."""
    ports: list[int] = []
    for item in text.split(","):
        port = parse_port(item.strip())
        if port not in ports:
            ports.append(port)
    return tuple(ports)


def check_host_pattern(pattern: str) -> str:
    if not _HOST_PATTERN.fullmatch(pattern):
        raise ValueError(
            f"{pattern!r} is not a host name pattern (letters, digits, '-', '.', '*' and '?')"
        )
    return pattern.lower()


def check_nft_word(text: str, what: str) -> str:
    if not _NFT_WORD.fullmatch(text):
        raise ValueError(f"{text!r} is not a valid {what}")
    return text


def collapsed_networks(policy: Policy) -> tuple[list[IPNetwork], list[IPNetwork]]:
    """The policy's prefixes, IPv4 and IPv6, merged where they overlap or touch.

    Same membership as the proxy's PrefixTable (an address is Chime when inside any prefix), in
    the fewest networks: nftables refuses overlapping interval elements, and a PAC file checks
    each network in turn.
    """
    v4 = [p.network for p in policy.table.prefixes if isinstance(p.network, ipaddress.IPv4Network)]
    v6 = [p.network for p in policy.table.prefixes if isinstance(p.network, ipaddress.IPv6Network)]
    return list(ipaddress.collapse_addresses(v4)), list(ipaddress.collapse_addresses(v6))


def check_host_name(text: str) -> str:
    """A DNS host name (letters, digits, '-', '.'), lowercased as names compare; raises
    ValueError saying what is wrong."""
    if not _HOSTNAME.fullmatch(text):
        raise ValueError(f"{text!r} is not a host name")
    return text.lower()


def source_comment(policy: Policy, config: str) -> str:
    """Where the generated file's prefixes come from, for a comment line: one printable line,
    whatever the allowlist's file name holds (a newline in it would end the comment)."""
    token = f", ranges syncToken {policy.ranges.sync_token}" if policy.ranges else ""
    return f"from {printable(config)} ({plural(len(policy.table), 'prefix', 'prefixes')}{token})"
