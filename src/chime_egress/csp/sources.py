"""Source expressions: which CSP3 grammar production a token of a source list matches.

The grammar is the one of https://w3c.github.io/webappsec-csp/#grammardef-serialized-source-list.
Parsing a policy keeps every token as written (#parse-serialized-policy validates nothing); a token
that matches no production is simply never matched by the algorithms of
#match-url-to-source-expression, which is why a list of nothing but such tokens acts as 'none'.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from functools import lru_cache


class SourceKind(enum.Enum):
    NONE = "'none'"
    STAR = "*"
    KEYWORD = "keyword-source"
    NONCE = "nonce-source"
    HASH = "hash-source"
    SCHEME = "scheme-source"
    HOST = "host-source"
    INVALID = "invalid"


# Keyword sources of CSP3 (and the reporting and Trusted Types specifications that add to the
# list); ABNF strings are case-insensitive, so these are compared lowercased.
KEYWORDS = frozenset(
    {
        "'self'",
        "'unsafe-inline'",
        "'unsafe-eval'",
        "'strict-dynamic'",
        "'unsafe-hashes'",
        "'report-sample'",
        "'unsafe-allow-redirects'",
        "'wasm-unsafe-eval'",
        "'trusted-types-eval'",
        "'inline-speculation-rules'",
        "'report-sha256'",
        "'report-sha384'",
        "'report-sha512'",
    }
)
EVAL_KEYWORDS = frozenset({"'unsafe-eval'", "'wasm-unsafe-eval'", "'trusted-types-eval'"})

_SCHEME = r"[A-Za-z][A-Za-z0-9+\-.]*"
_HOST = r"\*|(?:\*\.)?[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.?"
_PORT = r"[0-9]+|\*"
# path-absolute of RFC 3986: "/" [ segment-nz *( "/" segment ) ].
_PCHAR = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})"
_PATH = rf"/(?:{_PCHAR}+(?:/{_PCHAR}*)*)?"
_BASE64 = r"[A-Za-z0-9+/\-_]+={0,2}"

_SCHEME_SOURCE = re.compile(rf"({_SCHEME}):", re.ASCII)
_HOST_SOURCE = re.compile(
    rf"(?:({_SCHEME})://)?({_HOST})(?::({_PORT}))?({_PATH})?", re.ASCII | re.IGNORECASE
)
_NONCE_SOURCE = re.compile(rf"'nonce-({_BASE64})'", re.ASCII | re.IGNORECASE)
_HASH_SOURCE = re.compile(rf"'(sha256|sha384|sha512)-({_BASE64})'", re.ASCII | re.IGNORECASE)


@dataclass(frozen=True)
class SourceExpression:
    """One token of a source list, classified; scheme and host lowercased."""

    text: str
    kind: SourceKind
    scheme: str | None = None
    host: str | None = None
    port: str | None = None
    path: str = ""
    keyword: str | None = None
    """KEYWORD: the keyword, lowercased, with its quotes."""

    @property
    def is_url_source(self) -> bool:
        """Whether the expression can match a URL at all (a host, a scheme, * or 'self')."""
        return self.kind in (SourceKind.STAR, SourceKind.SCHEME, SourceKind.HOST) or (
            self.keyword == "'self'"
        )


@lru_cache(maxsize=4096)
def parse_source(token: str) -> SourceExpression:
    """Classify `token` by the first production of the source-list grammar it matches."""
    lowered = token.lower()
    if lowered == "'none'":
        return SourceExpression(token, SourceKind.NONE)
    if token == "*":
        return SourceExpression(token, SourceKind.STAR)
    if lowered in KEYWORDS:
        return SourceExpression(token, SourceKind.KEYWORD, keyword=lowered)
    if _NONCE_SOURCE.fullmatch(token):
        return SourceExpression(token, SourceKind.NONCE)
    if _HASH_SOURCE.fullmatch(token):
        return SourceExpression(token, SourceKind.HASH)
    scheme = _SCHEME_SOURCE.fullmatch(token)
    if scheme:
        return SourceExpression(token, SourceKind.SCHEME, scheme=scheme.group(1).lower())
    host = _HOST_SOURCE.fullmatch(token)
    if host:
        return SourceExpression(
            token,
            SourceKind.HOST,
            scheme=host.group(1).lower() if host.group(1) else None,
            host=host.group(2).lower(),
            port=host.group(3),
            path=host.group(4) or "",
        )
    return SourceExpression(token, SourceKind.INVALID)


def quoted_url_source(token: str) -> SourceExpression | None:
    """For an invalid `'...'` token whose inside is a host or scheme source: that source."""
    if len(token) > 2 and token[0] == token[-1] == "'":
        inner = parse_source(token[1:-1])
        if inner.kind in (SourceKind.SCHEME, SourceKind.STAR):
            return inner
        # 'wasm-eval' is a mistyped keyword, not a quoted host: a host needs a dot or more.
        if inner.kind is SourceKind.HOST and (
            inner.scheme or inner.port or inner.path or "." in (inner.host or "")
        ):
            return inner
    return None
