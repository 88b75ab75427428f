"""Recognising Chime media: pass through only on positive evidence, never when HTTP is offered."""

import pytest

from chime_egress.policy.media import (
    DEFAULT_MEDIA_HOSTS,
    MediaHosts,
    announced_protocols,
    media_host_problem,
    media_reason,
)

DEFAULT = MediaHosts(DEFAULT_MEDIA_HOSTS)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("ice.z2.as2.m.chime.aws", True),
        ("ICE.X1.UE1.M.CHIME.AWS.", True),
        ("ice.a.chime.aws", True),
        ("ice.chime.aws", False),  # '*' needs at least one character
        ("signal.m3.ue1.app.chime.aws", False),
        ("xice.z2.chime.aws", False),
        ("ice.z2.chime.aws.evil.example", False),
        (None, False),
    ],
)
def test_default_media_hosts(host, expected):
    assert DEFAULT.match(host) is expected


def test_no_patterns_match_nothing():
    assert not MediaHosts(()).match("ice.z2.as2.m.chime.aws")


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("ice.*.chime.aws", None),
        ("turn-*.example.com", None),
        ("*", "two or more labels"),
        ("ICE.*.chime.aws", "lowercase"),
        ("ice.*.chime.*", "literal domain"),
        ("*.aws", "literal domain"),
        ("ice..chime.aws", "two or more labels"),
        ("https://ice.chime.aws", "two or more labels"),
        ("ice.chime.aws:443", "two or more labels"),
    ],
)
def test_media_host_pattern_validation(pattern, problem):
    found = media_host_problem(pattern)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_alpn_header_is_comma_separated_and_percent_decoded():
    assert announced_protocols("webrtc") == {"webrtc"}
    assert announced_protocols("h2, http%2F1.1") == {"h2", "http/1.1"}
    assert announced_protocols("") == frozenset()
    assert announced_protocols(None) == frozenset()


def reason(
    *,
    connect_alpn: str | None = None,
    tls: bool = True,
    sni: str | None = "ice.z2.as2.m.chime.aws",
    offered_alpns: tuple[bytes, ...] = (),
    first_bytes: bytes = b"\x16\x03\x01",
) -> str:
    """The reason as text; "" when the connection is to be intercepted."""
    why = media_reason(
        connect_alpn=connect_alpn,
        tls=tls,
        sni=sni,
        offered_alpns=offered_alpns,
        first_bytes=first_bytes,
        media_hosts=DEFAULT,
    )
    return why or ""


def test_turn_tls_to_a_media_host_without_alpn_is_media():
    assert "media host" in reason()


def test_media_host_offering_http_is_intercepted():
    assert reason(offered_alpns=(b"h2", b"http/1.1")) == ""
    assert reason(offered_alpns=(b"http/1.1",)) == ""


def test_no_alpn_alone_does_not_make_media():
    assert reason(sni="signal.m1.ue1.app.chime.aws") == ""
    assert reason(sni=None) == ""


def test_webrtc_connect_is_media_unless_the_tunnel_speaks_http():
    assert "ALPN webrtc" in reason(connect_alpn="webrtc", sni=None)
    assert "c-webrtc" in reason(connect_alpn="c-webrtc", sni="signal.x.chime.aws")
    assert reason(connect_alpn="webrtc", tls=False, sni=None, first_bytes=b"\x00\x03") != ""
    assert reason(connect_alpn="webrtc", tls=False, sni=None, first_bytes=b"GET / HTTP/1.1") == ""
    assert reason(connect_alpn="webrtc", offered_alpns=(b"h2",)) == ""


def test_mixed_or_other_announced_protocols_stay_intercepted():
    assert reason(connect_alpn="webrtc, h2", sni="signal.x.chime.aws") == ""
    assert reason(connect_alpn="h2", sni="signal.x.chime.aws") == ""


def test_a_server_name_with_a_trailing_newline_is_not_a_media_host():
    # `$` in a Python pattern also matches before a final newline: the match must be whole.
    hosts = MediaHosts(("ice.*.chime.aws",))
    assert hosts.match("ice.z2.chime.aws")
    assert not hosts.match("ice.z2.chime.aws\n")
