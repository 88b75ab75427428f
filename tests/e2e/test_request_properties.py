"""Property: whatever a client sends, what reaches Chime carries exactly the configured headers.

Hypothesis generates requests (random header names and values, Chime header names in any case
or with underscores, Connection options, random control characters and obs-fold lines, random
split points, HTTP/1.0 or 1.1, through a CONNECT tunnel or in absolute form; HTTP/2 fields with
CR/LF to an HTTP/1.1 upstream) and sends them through the real mitmdump to a raw recording
upstream on the Chime address. Every request that arrives must read, to h11, http.client and
Node's lenient parser alike (or as decoded HTTP/2), as exactly one line of each Chime header with
the configured value, and nothing else they would take for one. Refused requests never arrive.

Example counts are kept small so the whole suite stays within CI's budget; every run draws new
examples (no example database is written).
"""

from __future__ import annotations

import string
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import CHIME_IP
from tests.support.config import App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.recorder import RecordingServer, recording
from tests.support.smuggle import (
    assert_every_request_exact,
    h2_exchange,
    split_at,
    through_tunnel,
    to_proxy,
)
from tests.support.tls import TestCA

APPS = [App("AppKey1", tenants=["orgId"])]
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TCHAR = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
CHIME = ("X-Amzn-Chime-App-Keys", "X-Amzn-Chime-Tenants")
# Pieces that parsers split on, fold with, or read as header names.
TRICKS = (
    "\r",
    "\n",
    "\r\n",
    "\r\n ",
    "\r\n\t",
    "\x00",
    "\x0b",
    "\x0c",
    "\x7f",
    "\t",
    " ",
    ":",
    ",",
    "X-Amzn-Chime-App-Keys: evil",
    "x-amzn-chime-tenants:evil:x",
    "\r\nX-Amzn-Chime-App-Keys: evil",
    "\rX-Amzn-Chime-Tenants: evil:x",
    "\r\n X-Amzn-Chime-App-Keys: evil",
    "X-Amzn-Chime-App-Keys",
    "keep-alive",
    "close",
)


@st.composite
def chime_spelling(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(CHIME))
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    name = "".join(c.upper() if f else c.lower() for c, f in zip(name, flips, strict=True))
    if draw(st.booleans()):
        name = name.replace("-", "_")
    return name


names = st.one_of(
    st.text(TCHAR, min_size=1, max_size=10),
    chime_spelling(),
    st.sampled_from(["Connection", "Proxy-Connection", "Trailer", "TE", "Keep-Alive", "Foo"]),
    st.tuples(chime_spelling(), st.sampled_from(TRICKS)).map("".join),  # `Name : v`, `Name\r`
)
values = st.lists(
    st.one_of(st.text(string.printable.strip() + " ", max_size=8), st.sampled_from(TRICKS)),
    max_size=5,
).map("".join)
headers = st.lists(st.tuples(names, values), max_size=6)


def request_bytes(authority: str, fields: list[tuple[str, str]], version: str, target: str):
    lines = [f"GET {target} HTTP/{version}", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@pytest.fixture(scope="module")
def proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    config = write_config(tmp_path_factory.mktemp("property"), APPS, cidrs=[f"{CHIME_IP}/32"])
    return module_proxy_launcher.start(config, label="property")


@pytest.fixture(scope="module")
def lazy_proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    config = write_config(tmp_path_factory.mktemp("property-lazy"), APPS, cidrs=[f"{CHIME_IP}/32"])
    lazy = ["--set", "connection_strategy=lazy"]
    return module_proxy_launcher.start(config, extra_args=lazy, label="property-lazy")


@pytest.fixture(scope="module")
def plain_recorder() -> Iterator[RecordingServer]:
    yield from recording(None, name="property-plain")


@pytest.fixture(scope="module")
def h1_tls_recorder(test_ca: TestCA) -> Iterator[RecordingServer]:
    yield from recording(test_ca, name="property-h1")


@PROPERTY
@given(
    fields=headers,
    version=st.sampled_from(["1.0", "1.1"]),
    transport=st.sampled_from(["connect", "absolute-form"]),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=3, unique=True),
)
def test_http1_requests_reach_chime_only_with_exactly_the_headers(
    proxy: MitmdumpProcess,
    plain_recorder: RecordingServer,
    fields: list[tuple[str, str]],
    version: str,
    transport: str,
    cuts: list[int],
) -> None:
    plain_recorder.clear()
    authority = plain_recorder.authority
    target = f"http://{authority}/p" if transport == "absolute-form" else "/p"
    data = request_bytes(authority, fields, version, target)
    parts = split_at(data, *sorted(c for c in cuts if c < len(data)))
    if transport == "connect":
        answer = through_tunnel(
            proxy.port, CHIME_IP, plain_recorder.port, parts, pause=0.02, first_answer=True
        )
    else:
        answer = to_proxy(proxy.port, parts, pause=0.02, first_answer=True)
    assert_every_request_exact(plain_recorder, context=(data, parts, answer))


h2_names = st.one_of(
    st.text(string.ascii_lowercase + "-_", min_size=1, max_size=10),
    chime_spelling().map(str.lower),
    st.sampled_from(["connection", "te", "foo"]),
    st.tuples(chime_spelling().map(str.lower), st.sampled_from(TRICKS)).map("".join),
)


@PROPERTY
@given(fields=st.lists(st.tuples(h2_names, values), max_size=5))
def test_http2_requests_reach_an_http1_chime_only_with_exactly_the_headers(
    lazy_proxy: MitmdumpProcess,
    h1_tls_recorder: RecordingServer,
    fields: list[tuple[str, str]],
) -> None:
    """Lazy strategy: HTTP/2 fields become HTTP/1.1 header lines at the upstream."""
    h1_tls_recorder.clear()
    request = [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", h1_tls_recorder.authority.encode()),
        (b":path", b"/p"),
        *((n.encode("latin-1"), v.encode("latin-1")) for n, v in fields),
    ]
    h2_exchange(lazy_proxy.port, CHIME_IP, h1_tls_recorder.port, lazy_proxy.ca_cert, request)
    assert_every_request_exact(h1_tls_recorder, context=request)
