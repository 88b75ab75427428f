"""The check page a helpdesk sends people to: http://chime-egress.invalid/, answered by the real
mitmdump with the addon, for the asking client only.

Clients are told apart by their source address on loopback (127.0.0.1 default, 127.0.0.6 in
network sales, 127.0.0.7 in network labs, observed). Each must see its own network, mode and
exact headers, and nothing of the others'.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cli.support import run
from tests.support.config import write_ranges
from tests.support.proxy import LISTEN_HOST, MitmdumpProcess, ProxyLauncher

CHECK_HOST = "chime-egress.invalid"
SALES_CLIENT = "127.0.0.6"
LABS_CLIENT = "127.0.0.7"
# A legal AppKey (printable ASCII without , ; : or spaces) that is also markup: it must be shown
# as text, never run.
MARKUP_KEY = "<script>alert(1)</script>"

ALLOWLIST = f"""\
mode: enforce
apps:
  - app_key: "{MARKUP_KEY}"
  - app_key: CorpKey
    tenants: [corpOrg]
networks:
  - name: sales
    clients: [127.0.0.6/32]
    mode: enforce
    apps:
      - app_key: SalesKey
        tenants: [salesOrg]
  - name: labs
    clients: [127.0.0.7/32]
    mode: observe
destinations:
  ip_ranges: ranges.json
  cidrs: [127.0.0.2/32]
"""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, object]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document

    @property
    def text(self) -> str:
        return self.body.decode()


def ask(
    proxy: MitmdumpProcess, path: str, source: str = LISTEN_HOST, accept: str | None = None
) -> Answer:
    """GET http://chime-egress.invalid{path} through the proxy, from the address `source`."""
    connection = http.client.HTTPConnection(
        LISTEN_HOST, proxy.port, timeout=10, source_address=(source, 0)
    )
    try:
        headers = {"Accept": accept} if accept else {}
        connection.request("GET", f"http://{CHECK_HOST}{path}", headers=headers)
        response = connection.getresponse()
        return Answer(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def proxy(
    module_proxy_launcher: ProxyLauncher, tmp_path_factory: pytest.TempPathFactory
) -> MitmdumpProcess:
    folder = tmp_path_factory.mktemp("check-page")
    write_ranges(folder / "ranges.json", ["99.77.128.0/18"], sync_token="1787411825")
    allowlist = folder / "allowlist.yaml"
    allowlist.write_text(ALLOWLIST)
    return module_proxy_launcher.start(allowlist, label="check page")


def test_json_for_a_client_of_the_default_settings(proxy: MitmdumpProcess) -> None:
    since = proxy.mark()
    answer = ask(proxy, "/check.json")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Cache-Control"] == "no-store"
    document = answer.json
    assert document["client"] == {"address": "127.0.0.1"}
    assert document["network"] == {
        "kind": "network",
        "name": "default",
        "range": None,
        "mode": "enforce",
    }
    assert document["headers"] == [
        {"name": "X-Amzn-Chime-App-Keys", "value": f"{MARKUP_KEY},CorpKey"},
        {"name": "X-Amzn-Chime-Tenants", "value": "CorpKey:corpOrg"},
    ]
    configuration = document["configuration"]
    assert isinstance(configuration, dict)
    assert configuration["ranges_sync_token"] == "1787411825"
    loaded = datetime.fromisoformat(str(configuration["loaded_at"]))
    assert loaded.tzinfo is not None and abs((datetime.now(UTC) - loaded).total_seconds()) < 600
    # Answered by the proxy itself: nothing was forwarded anywhere.
    time.sleep(0.3)
    assert "server connect" not in proxy.output()[since:]


def test_each_client_sees_its_own_network_and_nothing_of_the_others(
    proxy: MitmdumpProcess,
) -> None:
    sales = ask(proxy, "/check.json", source=SALES_CLIENT)
    assert sales.json["client"] == {"address": SALES_CLIENT}
    assert sales.json["network"] == {
        "kind": "network",
        "name": "sales",
        "range": "127.0.0.6/32",
        "mode": "enforce",
    }
    assert sales.json["headers"] == [
        {"name": "X-Amzn-Chime-App-Keys", "value": "SalesKey"},
        {"name": "X-Amzn-Chime-Tenants", "value": "SalesKey:salesOrg"},
    ]
    labs = ask(proxy, "/check.json", source=LABS_CLIENT)
    assert labs.json["network"] == {
        "kind": "network",
        "name": "labs",
        "range": "127.0.0.7/32",
        "mode": "observe",
    }
    assert labs.json["headers"] == []
    # Neither the JSON nor the page of one client names another's network, addresses, apps or
    # tenants, nor the allowlist file.
    others = {
        SALES_CLIENT: ["labs", "127.0.0.7", "CorpKey", "corpOrg", "alert(1)"],
        LABS_CLIENT: ["sales", "127.0.0.6", "SalesKey", "CorpKey", "salesOrg", "alert(1)"],
        LISTEN_HOST: ["sales", "labs", "127.0.0.6", "127.0.0.7", "SalesKey", "salesOrg"],
    }
    for source, words in others.items():
        for answer in (ask(proxy, "/check.json", source), ask(proxy, "/", source)):
            body = answer.text
            assert "allowlist.yaml" not in body
            assert [word for word in words if word in body] == [], (source, body)


def test_the_page_is_html_with_everything_escaped(proxy: MitmdumpProcess) -> None:
    page = ask(proxy, "/")
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.text
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;,CorpKey" in html
    assert "X-Amzn-Chime-Tenants: CorpKey:corpOrg" in html
    assert '<a href="/ca.pem">' in html
    # Scripts asking for JSON at the page's own address get JSON.
    assert ask(proxy, "/", accept="application/json").json["network"] == {
        "kind": "network",
        "name": "default",
        "range": None,
        "mode": "enforce",
    }


def test_observe_mode_says_nothing_is_added(proxy: MitmdumpProcess) -> None:
    html = ask(proxy, "/", source=LABS_CLIENT).text
    assert "observe mode: the proxy adds nothing and decrypts nothing" in html
    assert "X-Amzn-Chime-App-Keys" not in html


def _fingerprint(pem: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(pem.read_text())
    return hashlib.sha256(der).digest().hex(":").upper()


def test_the_ca_certificate_is_served_and_fingerprinted(proxy: MitmdumpProcess) -> None:
    answer = ask(proxy, "/ca.pem")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/x-x509-ca-cert"
    assert answer.body == proxy.ca_cert.read_bytes()
    ca = ask(proxy, "/check.json").json["ca_certificate"]
    assert ca == {
        "url": f"http://{CHECK_HOST}/ca.pem",
        "sha256": _fingerprint(proxy.ca_cert),
        "subject": "O=mitmproxy,CN=mitmproxy",  # RFC 4514 order: most specific first
    }


def test_the_ca_command_finds_the_same_certificate(proxy: MitmdumpProcess) -> None:
    result = run("ca", "--confdir", proxy.confdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"certificate: {proxy.ca_cert}"
    assert f"SHA-256 fingerprint: {_fingerprint(proxy.ca_cert)}" in lines
    document = json.loads(run("ca", "--confdir", proxy.confdir, "--format", "json").stdout)
    assert document["sha256"] == _fingerprint(proxy.ca_cert)
    assert document["path"] == str(proxy.ca_cert)


def test_the_ca_command_without_a_certificate(tmp_path: Path) -> None:
    result = run("ca", "--confdir", tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert "not found; mitmproxy creates it on its first start" in result.stderr


def test_the_ca_command_warns_about_a_readable_private_key(tmp_path: Path) -> None:
    # A CA of our own, in mitmproxy's file layout: the key file must be private.
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=test-ca", "-keyout", str(tmp_path / "mitmproxy-ca.pem"),
            "-out", str(tmp_path / "mitmproxy-ca-cert.pem"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (tmp_path / "mitmproxy-ca.pem").chmod(0o644)
    result = run("ca", "--confdir", tmp_path)
    assert result.returncode == 0
    assert "readable by others (mode 644): chmod 600 it" in result.stderr
    assert "subject: CN=test-ca" in result.stdout


def test_an_unknown_page_is_404_and_health_still_answers(proxy: MitmdumpProcess) -> None:
    missing = ask(proxy, "/nope")
    assert missing.status == 404
    assert missing.json["pages"] == [
        "/",
        "/ca.pem",
        "/check.json",
        "/health",
        "/live",
        "/ready",
    ]
    assert ask(proxy, "/health").json["status"] == "healthy"


def test_health_as_json(proxy: MitmdumpProcess) -> None:
    result = run("health", "--proxy", f"{LISTEN_HOST}:{proxy.port}", "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["healthy"] is True
    assert document["detail"].startswith(f"{LISTEN_HOST}:{proxy.port}: chime-egress ")
