"""The header values: the AWS guide's worked examples byte for byte, client copies removed.

One mitmdump per allowlist below (a module-scoped, parametrized fixture); 127.0.0.2 is made a Chime
address through ``cidrs``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.asserts import assert_chime_headers, other_headers
from tests.support.clients import (
    curl,
    get_json,
    header_pairs,
    https_connection,
    websocket_roundtrip,
)
from tests.support.config import APP_KEYS_HEADER, TENANTS_HEADER, App, write_config
from tests.support.proxy import MitmdumpProcess, ProxyLauncher
from tests.support.servers import EchoServer


@dataclass(frozen=True)
class Example:
    apps: tuple[App, ...]
    app_keys: str
    tenants: str | None


EXAMPLES: dict[str, Example] = {
    # The three worked examples of the AWS guide "Using AppKeys and TenantIDs".
    "guide-one-app-one-tenant": Example((App("AppKey", ["orgId"]),), "AppKey", "AppKey:orgId"),
    "guide-one-app-two-tenants": Example(
        (App("AppKey", ["engineeringId", "salesId"]),),
        "AppKey",
        "AppKey:engineeringId,salesId",
    ),
    "guide-two-apps-one-limited": Example(
        (App("AppKey1", ["orgId"]), App("AppKey2")), "AppKey1,AppKey2", "AppKey1:orgId"
    ),
    # No app has tenants: no Tenants header at all.
    "no-tenants": Example((App("AppKey1"), App("AppKey2", name="Sales")), "AppKey1,AppKey2", None),
    # File order, not sorted order, for apps and for tenants; ";" between apps.
    "file-order": Example(
        (
            App("Zeta-key", ["t2", "t1"], name="Z"),
            App("Alpha_key"),
            App("Mid!key@1", ["xy9", "ab"]),
        ),
        "Zeta-key,Alpha_key,Mid!key@1",
        "Zeta-key:t2,t1;Mid!key@1:xy9,ab",
    ),
}

SPOOFED = [
    "x-amzn-chime-app-keys: Evil",
    "X-AMZN-CHIME-TENANTS: Evil:x1",
    "X-Amzn-Chime-App-Keys: Evil2,AppKey",
    "x-AmZn-ChImE-tEnAnTs: AppKey:evilTenant",
]
KEEP = ["X-Keep: one", "x-keep: two"]


@dataclass(frozen=True)
class Running:
    example: Example
    proxy: MitmdumpProcess


@pytest.fixture(scope="module", params=list(EXAMPLES))
def running(
    request: pytest.FixtureRequest,
    module_proxy_launcher: ProxyLauncher,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Running]:
    example = EXAMPLES[request.param]
    allowlist = write_config(tmp_path_factory.mktemp(request.param), example.apps)
    proxy = module_proxy_launcher.start(allowlist, label=f"headers {request.param}")
    yield Running(example, proxy)
    proxy.stop()  # one at a time: the next parameter starts its own


def _path() -> str:
    return f"/headers/{uuid.uuid4().hex}"


def test_http11_exact_values(running: Running, chime_server: EchoServer) -> None:
    path = _path()
    result = curl(
        chime_server.url(path), proxy_port=running.proxy.port, cacert=running.proxy.ca_cert
    )
    assert result.returncode == 0, result
    assert result.status == 200, result
    assert result.json["http_version"] == "HTTP/1.1"
    ex = running.example
    assert_chime_headers(result.headers(), ex.app_keys, ex.tenants, context=result)
    # Byte for byte on the wire, exactly one line each.
    [received] = [r for r in chime_server.requests() if r.path == path]
    assert received.raw_head is not None
    line = f"\r\n{APP_KEYS_HEADER}: {ex.app_keys}\r\n".encode()
    assert received.raw_head.count(line) == 1, received.raw_head
    assert received.raw_head.lower().count(APP_KEYS_HEADER.lower().encode()) == 1
    if ex.tenants is not None:
        line = f"\r\n{TENANTS_HEADER}: {ex.tenants}\r\n".encode()
        assert received.raw_head.count(line) == 1, received.raw_head
    assert received.raw_head.lower().count(TENANTS_HEADER.lower().encode()) == (
        0 if ex.tenants is None else 1
    )


def test_http11_client_copies_removed(running: Running, chime_server: EchoServer) -> None:
    result = curl(
        chime_server.url(_path()),
        proxy_port=running.proxy.port,
        cacert=running.proxy.ca_cert,
        headers=[*KEEP[:1], *SPOOFED, *KEEP[1:]],
    )
    assert result.returncode == 0, result
    ex = running.example
    assert_chime_headers(result.headers(), ex.app_keys, ex.tenants, context=result)
    assert [h for h in other_headers(result.headers()) if h[0].lower() == "x-keep"] == [
        ("X-Keep", "one"),
        ("x-keep", "two"),
    ]


def test_http2_exact_values_lowercase(running: Running, chime_server: EchoServer) -> None:
    result = curl(
        chime_server.url(_path()),
        proxy_port=running.proxy.port,
        cacert=running.proxy.ca_cert,
        http="2",
        headers=[*SPOOFED, *KEEP],
    )
    assert result.returncode == 0, result
    assert result.http_version == "2", result
    assert result.json["http_version"] == "HTTP/2", result
    ex = running.example
    assert_chime_headers(result.headers(), ex.app_keys, ex.tenants, http2=True, context=result)
    assert result.values("x-keep") == ["one", "two"]
    assert all(name == name.lower() for name, _ in result.headers()), result


def test_every_request_on_a_keepalive_connection(
    running: Running, chime_server: EchoServer
) -> None:
    spoof = header_pairs(SPOOFED)
    with https_connection(
        proxy_port=running.proxy.port,
        host=chime_server.host,
        port=chime_server.port,
        cacert=running.proxy.ca_cert,
    ) as conn:
        bodies = [get_json(conn, _path(), spoof if i % 2 else [])[1] for i in range(4)]
    assert len({b["connection_id"] for b in bodies}) == 1, "the connection was not kept alive"
    ex = running.example
    for body in bodies:
        assert_chime_headers(body["headers"], ex.app_keys, ex.tenants, context=body)


def test_websocket_upgrade(running: Running, chime_server: EchoServer) -> None:
    exchange = websocket_roundtrip(
        chime_server.url(_path(), scheme="wss"),
        proxy_port=running.proxy.port,
        cacert=running.proxy.ca_cert,
        headers=header_pairs(SPOOFED),
    )
    ex = running.example
    assert exchange.upgrade["websocket"] is True
    assert_chime_headers(exchange.upgrade["headers"], ex.app_keys, ex.tenants, context=exchange)
    assert exchange.echoes == ["hello", b"\x00\x01binary"]
