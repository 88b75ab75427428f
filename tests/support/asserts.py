"""Assertions on what the echo server received."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .config import APP_KEYS_HEADER, TENANTS_HEADER

HeaderList = Iterable[Sequence[str]]


def _fields(headers: HeaderList, name: str) -> list[tuple[str, str]]:
    lname = name.lower()
    return [(str(h[0]), str(h[1])) for h in headers if str(h[0]).lower() == lname]


def assert_chime_headers(
    headers: HeaderList,
    app_keys: str,
    tenants: str | None,
    *,
    http2: bool = False,
    context: object = "",
) -> None:
    """Exactly one App-Keys field and (when ``tenants`` is not None) one Tenants field arrived.

    Values must match byte for byte. Names must be spelled ``X-Amzn-Chime-App-Keys`` /
    ``X-Amzn-Chime-Tenants`` on HTTP/1.x and in lowercase on HTTP/2. ``tenants=None`` means the
    Tenants header must be absent.
    """
    headers = [tuple(h) for h in headers]
    where = f"\nreceived headers: {headers}\n{context}"
    expected_keys_name = APP_KEYS_HEADER.lower() if http2 else APP_KEYS_HEADER
    expected_tenants_name = TENANTS_HEADER.lower() if http2 else TENANTS_HEADER
    got_keys = _fields(headers, APP_KEYS_HEADER)
    got_tenants = _fields(headers, TENANTS_HEADER)
    assert got_keys == [(expected_keys_name, app_keys)], f"App-Keys header wrong{where}"
    if tenants is None:
        assert got_tenants == [], f"Tenants header must be absent{where}"
    else:
        assert got_tenants == [(expected_tenants_name, tenants)], f"Tenants header wrong{where}"


def assert_no_chime_headers_added(
    headers: HeaderList, sent: Sequence[tuple[str, str]] = (), *, context: object = ""
) -> None:
    """The Chime headers that arrived are exactly those the client sent (``sent``), unchanged."""
    headers = [tuple(h) for h in headers]
    where = f"\nreceived headers: {headers}\n{context}"
    for header in (APP_KEYS_HEADER, TENANTS_HEADER):
        expected = [(n, v) for n, v in sent if n.lower() == header.lower()]
        assert _fields(headers, header) == expected, f"{header} changed in transit{where}"


def other_headers(headers: HeaderList) -> list[tuple[str, str]]:
    """Every header field except the two Chime ones, exactly as received."""
    chime = {APP_KEYS_HEADER.lower(), TENANTS_HEADER.lower()}
    return [(str(h[0]), str(h[1])) for h in headers if str(h[0]).lower() not in chime]
