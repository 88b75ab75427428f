"""The addon's option parsing, and the mitmproxy settings it refuses (proxy/options.py)."""

from __future__ import annotations

import pytest

from chime_egress.proxy.options import (
    OPTION_NAMES,
    REFUSED_OPTIONS,
    parse_allowlist_option,
    parse_check_host,
    parse_reload_interval,
    parse_websocket_relay,
    refused_settings,
    unknown_options,
)


def test_unknown_chime_options_are_named_with_a_suggestion() -> None:
    assert unknown_options({"chime_allowlis": "x"}) == [
        "unknown option chime_allowlis; did you mean chime_allowlist?"
    ]
    [message] = unknown_options(["chime_zzz"])
    assert message.startswith("unknown option chime_zzz; the options are chime_allowlist, ")


def test_known_and_foreign_options_are_not_unknown() -> None:
    assert unknown_options([*OPTION_NAMES, "web_port", "my_script_option"]) == []


@pytest.mark.parametrize("text", ["", "   "])
def test_an_empty_allowlist_option_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="chime_allowlist is empty"):
        parse_allowlist_option(text)


@pytest.mark.parametrize(("text", "seconds"), [("1", 1.0), ("0.05", 0.05), ("5", 5.0)])
def test_reload_interval(text: str, seconds: float) -> None:
    assert parse_reload_interval(text) == seconds


@pytest.mark.parametrize("text", ["abc", "0", "6", "nan", "-1"])
def test_bad_reload_interval(text: str) -> None:
    with pytest.raises(ValueError, match="chime_reload_interval"):
        parse_reload_interval(text)


def test_websocket_relay() -> None:
    assert parse_websocket_relay("tcp") == "tcp"
    with pytest.raises(ValueError, match="one of tcp, websocket"):
        parse_websocket_relay("frames")


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("chime-egress.invalid", "chime-egress.invalid"),
        ("Check.Corp.Example.", "check.corp.example"),
    ],
)
def test_check_host(text: str, host: str) -> None:
    assert parse_check_host(text) == host


@pytest.mark.parametrize("text", ["", "a..b", "bad host", "x" * 64 + ".example", "ü.example"])
def test_check_host_must_be_a_host_name(text: str) -> None:
    with pytest.raises(ValueError, match="not a host name"):
        parse_check_host(text)


@pytest.mark.parametrize("text", ["check.chime.aws", "CHIME.AWS"])
def test_check_host_must_not_be_a_chime_name(text: str) -> None:
    with pytest.raises(ValueError, match="Chime name"):
        parse_check_host(text)


REFUSED = [
    ({"tcp_hosts": [".*"]}, "tcp_hosts"),
    ({"udp_hosts": ["example"]}, "udp_hosts"),
    ({"ignore_hosts": ["x"]}, "ignore_hosts"),
    ({"allow_hosts": ["x"]}, "allow_hosts"),
    ({"map_remote": ["|a|b"]}, "map_remote"),
    ({"validate_inbound_headers": False}, "validate_inbound_headers"),
    ({"keep_alt_svc_header": True}, "keep_alt_svc_header"),
    ({"modify_headers": ["/~q/X-Amzn-Chime-App-Keys/Typo"]}, "modify_headers"),
    ({"modify_headers": ["/~q/x-amzn-chime-tenants/@file"]}, "modify_headers"),
    ({"modify_headers": ["/~q/Connection/keep-alive, X-Amzn-Chime-App-Keys"]}, "modify_headers"),
    ({"modify_headers": ["/~q/X_Amzn_Chime_App_Keys/x"]}, "modify_headers"),
    ({"modify_body": ["/~q/foo/X\\-Amzn\\-Chime\\-Tenants: x"]}, "modify_body"),
]


@pytest.mark.parametrize(("options", "option"), REFUSED)
def test_settings_that_could_undo_the_headers_are_refused(
    options: dict[str, object], option: str
) -> None:
    [refused] = refused_settings(options)
    assert refused.option == option
    assert str(refused).startswith(f"{option}: refused: ")
    assert option in REFUSED_OPTIONS


ALLOWED = [
    {"tcp_hosts": [], "udp_hosts": [], "ignore_hosts": [], "allow_hosts": [], "map_remote": []},
    {"validate_inbound_headers": True, "keep_alt_svc_header": False},
    {"modify_headers": ["/~q/X-Request-Id/abc", "/~s/Server/hidden"]},
    {"modify_body": ["/~s/foo/bar"]},
    {"connection_strategy": "lazy", "rawtcp": True, "stream_large_bodies": "1m"},
]


@pytest.mark.parametrize("options", ALLOWED)
def test_other_settings_are_free(options: dict[str, object]) -> None:
    assert refused_settings(options) == []
