"""policy/local.py: which destinations the proxy refuses, and the option that allows some."""

from __future__ import annotations

import ipaddress

import pytest

from chime_egress.policy.local import LocalDestinations, parse_local_destinations

LISTENERS = [("127.0.0.1", 8080), ("0.0.0.0", 9108)]


def refusal(guard: LocalDestinations, address: str, port: int = 443) -> str | None:
    return guard.refusal(
        ipaddress.ip_address(address),
        port,
        LISTENERS,
        lambda a: str(a) in ("10.0.0.5",) or a.is_loopback,
    )


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.3", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "this-host"),
        ("::", "this-host"),
    ],
)
def test_host_and_link_addresses_are_refused_by_default(address: str, kind: str) -> None:
    why = refusal(LocalDestinations(), address)
    assert why is not None and kind in why and "chime_local_destinations" in why


@pytest.mark.parametrize("address", ["99.77.130.1", "10.1.2.3", "2600:f0f0:4100::1", "8.8.8.8"])
def test_other_addresses_pass(address: str) -> None:
    assert refusal(LocalDestinations(), address) is None


def test_allowed_exceptions_pass_but_never_the_proxys_own_listeners() -> None:
    guard = LocalDestinations(parse_local_destinations("127.0.0.0/8, ::1"))
    assert refusal(guard, "127.0.0.3") is None
    assert refusal(guard, "::1") is None
    assert "own listener" in (refusal(guard, "127.0.0.1", 8080) or "")
    assert refusal(guard, "127.0.0.2", 8080) is None  # another address, same port: not ours
    # Metrics on 0.0.0.0: every local address of the host is the listener, none other is.
    assert "own listener" in (refusal(guard, "127.0.0.9", 9108) or "")
    assert "own listener" in (refusal(guard, "10.0.0.5", 9108) or "")
    assert refusal(guard, "10.0.0.6", 9108) is None
    assert "link-local" in (refusal(guard, "169.254.169.254", 80) or "")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("localhost", "is not an address or CIDR"),
        ("127.0.0.1/8", "is not an address or CIDR"),
        ("10.0.0.0/8", "not a loopback, link-local or unspecified range"),
        ("126.0.0.0/7", "not a loopback, link-local or unspecified range"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
    ],
)
def test_bad_option_values_name_the_entry_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="chime_local_destinations") as error:
        parse_local_destinations(f"127.0.0.2, {text}")
    assert message in str(error.value) and repr(text) in str(error.value)


def test_empty_option_allows_nothing() -> None:
    assert parse_local_destinations("") == ()
    assert parse_local_destinations(" , ") == ()
