"""Recognising Chime media (TURN over TLS or TCP) so it can be relayed without decryption.

Media cannot carry HTTP headers and is SRTP inside, so decrypting it costs CPU and gains nothing.
A Chime-bound connection is treated as media only on positive evidence, and never when it offers
to speak HTTP: an HTTP request to a media host name must still get the headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from .ranges import canonical_host

# TURN servers the Chime SDK receives in JOIN_ACK look like ice.z2.as2.m.chime.aws.
DEFAULT_MEDIA_HOSTS: tuple[str, ...] = ("ice.*.chime.aws",)

# RFC 7639 protocol ids that Firefox puts in the ALPN header of a WebRTC CONNECT.
WEBRTC_ALPNS = frozenset({"webrtc", "c-webrtc"})

# TLS ALPN ids that mean "this connection will carry HTTP", which must get the headers.
HTTP_ALPNS = frozenset({b"http/1.0", b"http/1.1", b"h2", b"h2c", b"h3"})

_PATTERN_SYNTAX = re.compile(
    r"^[a-z0-9*]([a-z0-9*-]*[a-z0-9*])?(\.[a-z0-9*]([a-z0-9*-]*[a-z0-9*])?)+$"
)
_HTTP_REQUEST_START = re.compile(rb"^[A-Z]{3,10} \S")


def media_host_problem(pattern: str) -> str | None:
    """Why `pattern` is not a usable media host pattern, or None."""
    if len(pattern) > 253:
        return "is longer than a host name can be (253 characters)"
    if _PATTERN_SYNTAX.fullmatch(pattern) is None:
        return (
            "must be a lowercase host name of two or more labels, where '*' stands for any "
            "characters (for example ice.*.chime.aws)"
        )
    if "*" in "".join(pattern.split(".")[-2:]):
        return "must end in a literal domain (like chime.aws), not a wildcard"
    return None


@dataclass(frozen=True)
class MediaHosts:
    """Host name patterns of TURN servers; '*' matches any characters, dots included."""

    patterns: tuple[str, ...]
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        alternatives = [
            ".+".join(re.escape(part) for part in pattern.split("*")) for pattern in self.patterns
        ]
        regex = re.compile(f"^(?:{'|'.join(alternatives)})$") if alternatives else None
        object.__setattr__(self, "_regex", regex)

    def match(self, host: str | None) -> bool:
        if host is None or self._regex is None:
            return False
        return self._regex.fullmatch(canonical_host(host)) is not None


def announced_protocols(alpn_header: str | None) -> frozenset[str]:
    """Protocol ids of an RFC 7639 `ALPN` request header (comma-separated, percent-encoded)."""
    if not alpn_header:
        return frozenset()
    return frozenset(unquote(token.strip()) for token in alpn_header.split(",") if token.strip())


def looks_like_http(data: bytes) -> bool:
    return _HTTP_REQUEST_START.match(data) is not None


def media_reason(
    *,
    connect_alpn: str | None,
    tls: bool,
    sni: str | None,
    offered_alpns: Iterable[bytes],
    first_bytes: bytes,
    media_hosts: MediaHosts,
) -> str | None:
    """Why a Chime-bound connection is media to pass through untouched, or None to intercept it.

    `tls`, `sni` and `offered_alpns` describe the client's complete ClientHello, if it sent one.
    """
    if tls and HTTP_ALPNS.intersection(offered_alpns):
        return None  # the client offers HTTP: it may send requests, which need the headers
    if not tls and looks_like_http(first_bytes):
        return None
    announced = announced_protocols(connect_alpn)
    if announced and announced <= WEBRTC_ALPNS:
        return f"CONNECT announced ALPN {', '.join(sorted(announced))}"
    if tls and media_hosts.match(sni):
        return f"TLS server name {sni} is a media host"
    return None
