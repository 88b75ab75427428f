"""Building the two Chime headers from an allowlist.

Grammar (see the AWS guide "Using AppKeys and TenantIDs"):
    X-Amzn-Chime-App-Keys = appkey *( "," appkey )
    X-Amzn-Chime-Tenants  = entry *( ";" entry ),  entry = appkey ":" tenantid *( "," tenantid )
No whitespace anywhere: nothing documents that Chime tolerates it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

APP_KEYS_HEADER = "X-Amzn-Chime-App-Keys"
TENANTS_HEADER = "X-Amzn-Chime-Tenants"
CHIME_HEADER_NAMES: tuple[str, ...] = (APP_KEYS_HEADER, TENANTS_HEADER)

# Many servers and proxies refuse a header line above 8 KiB; Chime publishes no limit of its own.
MAX_HEADER_LINE_BYTES = 8192


@dataclass(frozen=True)
class ChimeHeaders:
    """The exact header values the proxy sends; `tenants` is None when no app names tenants."""

    app_keys: str
    tenants: str | None

    def items(self) -> tuple[tuple[str, str], ...]:
        """(name, value) pairs in the order they are sent, with the canonical names."""
        pairs = [(APP_KEYS_HEADER, self.app_keys)]
        if self.tenants is not None:
            pairs.append((TENANTS_HEADER, self.tenants))
        return tuple(pairs)

    def items_lowercase(self) -> tuple[tuple[str, str], ...]:
        """The same pairs with lowercase names, as HTTP/2 requires."""
        return tuple((name.lower(), value) for name, value in self.items())

    def lines(self) -> tuple[str, ...]:
        return tuple(f"{name}: {value}" for name, value in self.items())


def build_headers(apps: Iterable[tuple[str, Sequence[str]]]) -> ChimeHeaders:
    """Headers for (app_key, tenant_ids) pairs in allowlist order; no tenants means any tenant."""
    app_list = list(apps)
    app_keys = ",".join(app_key for app_key, _ in app_list)
    entries = [f"{app_key}:{','.join(tenants)}" for app_key, tenants in app_list if tenants]
    return ChimeHeaders(app_keys=app_keys, tenants=";".join(entries) if entries else None)


def oversized_lines(headers: ChimeHeaders) -> list[tuple[str, int]]:
    """(header name, line size in bytes) for every line above MAX_HEADER_LINE_BYTES."""
    return [
        (name, size)
        for name, value in headers.items()
        if (size := len(f"{name}: {value}".encode())) > MAX_HEADER_LINE_BYTES
    ]
