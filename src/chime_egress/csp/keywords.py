"""Where each keyword source has an effect: shared by lint (misplaced keywords) and merge (what a
directive created from its fallback keeps)."""

from __future__ import annotations

from .sources import EVAL_KEYWORDS, SourceKind, parse_source

# #can-compile-strings and #can-compile-wasm-bytes read script-src, else default-src, only.
EVAL_DIRECTIVES = frozenset({"script-src", "default-src"})
# Inline checks (#should-block-inline) and nonce/hash checks on elements.
INLINE_DIRECTIVES = frozenset(
    {
        "default-src",
        "script-src",
        "script-src-elem",
        "script-src-attr",
        "style-src",
        "style-src-elem",
        "style-src-attr",
    }
)
# #script-pre-request runs for script-like requests checked against these (child-src through
# the worker-src fallback).
STRICT_DYNAMIC_DIRECTIVES = frozenset(
    {"default-src", "script-src", "script-src-elem", "worker-src", "child-src"}
)
_INLINE_KEYWORDS = frozenset({"'unsafe-inline'", "'unsafe-hashes'", "'report-sample'"})


def effective_in(token: str, directive: str) -> bool:
    """False for a keyword, nonce or hash that `directive` never consults; True otherwise."""
    source = parse_source(token)
    if source.kind in (SourceKind.NONCE, SourceKind.HASH):
        return directive in INLINE_DIRECTIVES
    if source.kind is not SourceKind.KEYWORD:
        return True
    keyword = source.keyword
    if keyword in EVAL_KEYWORDS:
        return directive in EVAL_DIRECTIVES
    if keyword in _INLINE_KEYWORDS:
        return directive in INLINE_DIRECTIVES
    if keyword == "'strict-dynamic'":
        return directive in STRICT_DYNAMIC_DIRECTIVES
    return True


def where_effective(token: str) -> str:
    """Where `token` belongs, for a lint message."""
    source = parse_source(token)
    if source.keyword in EVAL_KEYWORDS:
        return "script-src (else default-src): only they are read for eval and WebAssembly"
    if source.keyword == "'strict-dynamic'":
        return "script-src, script-src-elem or worker-src"
    return "script-src*/style-src* (or default-src): only inline checks read it"
