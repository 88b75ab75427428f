"""`chime-egress csp generate|check|merge`, run as installed; --url against a loopback server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chime_egress.csp import FEATURES, generate_policy, merge_policies
from tests.support.tls import TestCA

from .support import run, serving

ALL = ",".join(FEATURES)
SEED = "connect-src '*.chime.aws'"
SIGNALING = "wss://signal.m3.ue1.app.chime.aws/control/0b6f2a4e-7c1d-4b8e-9f3a-2d5c6e7f8a9b"
PAGE_HTML = (
    "<!doctype html><html><head>"
    '<meta http-equiv="Content-Security-Policy" content="img-src \'self\'">'
    "</head><body></body></html>"
)


def test_generate_prints_the_policy():
    result = run("csp", "generate", "--features", ALL)
    assert result.returncode == 0, result.stderr
    assert result.stdout == generate_policy(FEATURES) + "\n"


def test_generate_header_report_uri_and_unsafe_eval():
    result = run(
        "csp", "generate", "--features", "voice-focus", "--allow-unsafe-eval",
        "--report-uri", "/csp-reports", "--header",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = generate_policy(["voice-focus"], allow_unsafe_eval=True, report_uri="/csp-reports")
    assert result.stdout == f"Content-Security-Policy: {expected}\n"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("generate", "--features", "meetings,teleport"), ("'teleport'", "video-fx")),
        (("generate",), ("--features",)),
        (("generate", "--features", "meetings", "--report-uri", "a b"), ("report URI",)),
        (("check", "--features", "meetings"), ("--policy",)),
        (("check", "--policy", "x", "--url", "http://127.0.0.1/", "--features", "meetings"), ()),
        (("check", "--policy", "x", "--features", "meetings", "--origin", "nope"), ("nope",)),
    ],
)
def test_usage_errors_exit_2(args, words):
    result = run("csp", *args)
    assert result.returncode == 2
    for word in words:
        assert word in result.stderr


def test_check_the_seed_policy_is_blocked():
    result = run("csp", "check", "--policy", SEED, "--features", "meetings,background-image")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "origin: https://app.example\n" in out
    assert "  meetings: blocked\n" in out
    assert f"    blocked by connect-src: connect {SIGNALING}\n" in out
    assert "      policy 1: `connect-src '*.chime.aws'`\n" in out
    assert "    meetings needs: connect-src https://*.chime.aws wss://*.chime.aws" in out
    assert "  background-image: blocked\n" in out  # connect-src also blocks the image's fetch
    assert "error: connect-src: `'*.chime.aws'` in connect-src is not a valid source" in out
    assert "acts as 'none'" in out


def test_check_a_generated_policy_passes():
    result = run("csp", "check", "--policy", generate_policy(FEATURES), "--features", ALL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "blocked" not in result.stdout
    assert "findings: none" in result.stdout


def test_check_several_policies_each_must_allow():
    result = run(
        "csp", "check", "--policy", generate_policy(FEATURES), "--policy", "default-src 'self'",
        "--features", "messaging", "--origin", "https://meet.example.com:8443",
    )  # fmt: skip
    assert result.returncode == 1
    assert "origin: https://meet.example.com:8443" in result.stdout
    assert "(no connect-src: it falls back to default-src)" in result.stdout
    assert "policy 2: `default-src 'self'`" in result.stdout


def test_check_json():
    result = run("csp", "check", "--policy", SEED, "--features", "meetings", "--json")
    assert result.returncode == 1
    document = json.loads(result.stdout)
    assert document["allowed"] is False
    (meetings,) = document["features"]
    assert meetings["failures"][0] == {
        "kind": "connect",
        "url": SIGNALING,
        "directive": "connect-src",
    }
    assert {"severity", "directive", "message"} == set(document["findings"][0])


def test_check_policy_file_with_header_names_and_report_only(tmp_path):
    path = tmp_path / "policies.txt"
    path.write_text(
        "# from production\n"
        f"Content-Security-Policy: {generate_policy(['meetings'])}\n\n"
        f"Content-Security-Policy-Report-Only: {SEED}\n",
        encoding="utf-8",
    )
    result = run("csp", "check", "--policy-file", path, "--features", "meetings")
    assert result.returncode == 0, result.stdout
    assert "2 (report-only, blocks nothing): connect-src '*.chime.aws'" in result.stdout
    assert f"reported (report-only) by connect-src: connect {SIGNALING}" in result.stdout


def test_check_unreadable_policy_file(tmp_path):
    result = run("csp", "check", "--policy-file", tmp_path / "none.txt", "--features", "meetings")
    assert result.returncode == 2
    assert "none.txt: cannot read" in result.stderr


class _App(BaseHTTPRequestHandler):
    """A page served with two CSP headers, a Report-Only one and a <meta> policy."""

    def do_GET(self) -> None:
        if self.path != "/":
            self.send_error(404)
            return
        body = PAGE_HTML.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Security-Policy", generate_policy(["meetings", "messaging"]))
        self.send_header("Content-Security-Policy", "worker-src 'blob:'")
        self.send_header("Content-Security-Policy-Report-Only", "connect-src 'self'")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def app() -> Iterator[str]:
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _App)) as url:
        yield url


def test_check_url_reads_every_policy_of_the_response(app):
    result = run("csp", "check", "--url", f"{app}/", "--features", "meetings,messaging")
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert f"origin: {app}\n" in out
    assert "2 (enforced): worker-src 'blob:'" in out
    assert "3 (enforced): img-src 'self'" in out  # the <meta> policy
    assert "4 (report-only, blocks nothing): connect-src 'self'" in out
    assert "  meetings: blocked\n" in out
    assert f"    blocked by worker-src: worker blob:{app}/" in out
    assert "  messaging: allowed\n" in out
    assert "error: worker-src: policy 2: `'blob:'`" in out


@pytest.fixture(scope="module")
def tls_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The same page over HTTPS, with a certificate from a throwaway CA."""
    ca = TestCA.create(tmp_path_factory.mktemp("csp-ca"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    server.socket = (
        ca.issue(["127.0.0.1"]).server_context(alpn=()).wrap_socket(server.socket, server_side=True)
    )
    with serving(server, "https") as url:
        yield url, ca.cert_path


def test_check_https_url_with_the_servers_ca(tls_app):
    url, cacert = tls_app
    result = run("csp", "check", "--url", f"{url}/", "--cacert", cacert, "--features", "messaging")
    assert result.returncode == 0, result.stderr
    assert f"origin: {url}\n" in result.stdout
    assert "  messaging: allowed\n" in result.stdout
    # Without it the system's CAs do not know the server: unreadable input, not a verdict.
    untrusted = run("csp", "check", "--url", f"{url}/", "--features", "messaging")
    assert untrusted.returncode == 2
    assert "cannot fetch" in untrusted.stderr and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr


def test_check_url_json_names_the_url(app):
    result = run("csp", "check", "--url", f"{app}/", "--features", "messaging", "--json")
    assert result.returncode == 0, result.stdout
    document = json.loads(result.stdout)
    assert document["url"] == f"{app}/"
    assert [p["disposition"] for p in document["policies"]] == [
        "enforce",
        "enforce",
        "enforce",
        "report",
    ]


def test_check_url_http_error_and_no_server(app):
    result = run("csp", "check", "--url", f"{app}/missing", "--features", "meetings")
    assert result.returncode == 2
    assert "HTTP 404" in result.stderr
    result = run("csp", "check", "--url", "ftp://127.0.0.1/", "--features", "meetings")
    assert result.returncode == 2
    assert "only http and https" in result.stderr


def test_merge_prints_each_policy_merged():
    result = run(
        "csp", "merge", "--policy", SEED, "--policy", "default-src 'self', img-src 'none'",
        "--features", "meetings",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        merge_policies(SEED, ["meetings"]),
        merge_policies("default-src 'self', img-src 'none'", ["meetings"]),
    ]
    assert result.stdout.splitlines()[0] == (
        "connect-src '*.chime.aws' https://*.chime.aws wss://*.chime.aws"
    )


def test_merge_policy_file_keeps_header_names_and_report_only_lines(tmp_path):
    path = tmp_path / "policies.txt"
    path.write_text(
        "Content-Security-Policy: default-src 'self'\n"
        "Content-Security-Policy-Report-Only: connect-src 'none'\n",
        encoding="utf-8",
    )
    result = run("csp", "merge", "--policy-file", path, "--features", "messaging")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Content-Security-Policy: default-src 'self'; "
        "connect-src 'self' https://*.amazonaws.com wss://*.chime.aws",
        "Content-Security-Policy-Report-Only: connect-src 'none'",
    ]
