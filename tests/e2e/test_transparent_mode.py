"""Transparent mode with the nftables rules `chime-egress firewall` prints, applied for real.

Everything happens in a private network namespace (`unshare --net`, see netns_transparent.py), so
the rules never touch this machine's own network. Needs root, `unshare`, `ip` and `nft`; skipped
otherwise. The gateway case (`--hook prerouting`, traffic from other machines) needs a second
namespace and a veth pair, and is not exercised here; it uses the same sets and redirect.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.asserts import assert_chime_headers, assert_no_chime_headers_added
from tests.support.proxy import clean_env

ROOT = Path(__file__).resolve().parents[2]
NETNS = ["unshare", "--net", "--"]


def _namespace_usable() -> str | None:
    """Why the test cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespace, nftables)"
    for tool in ("unshare", "ip", "nft"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"needs {tool}"
    probe = subprocess.run(
        ["unshare", "--net", "--", "nft", "add", "table", "inet", "probe"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return f"cannot use nftables in a network namespace: {probe.stderr.decode()[:200]}"
    return None


_WHY_NOT = _namespace_usable()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    # Not under pytest's tmp_path: its parent is private to root, and mitmdump runs as nobody.
    workdir = Path(tempfile.mkdtemp(prefix="chime-transparent-"))
    os.chmod(workdir, 0o755)
    env = clean_env({"PATH": f"/usr/sbin:/sbin:{os.environ.get('PATH', '')}"})
    env["PYTHONPATH"] = str(ROOT)
    try:
        result = subprocess.run(
            [*NETNS, sys.executable, "-m", "tests.e2e.netns_transparent", str(workdir)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        data: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
        assert data["nft_rc"] == 0, data["nft_stderr"]
        yield data
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_chime_destination_redirected_and_injected(report: dict[str, Any]) -> None:
    chime = report["chime"]
    assert chime["status"] == 200, chime["curl"] + report["log"]
    assert_chime_headers(
        chime["headers"], "AppKey1,AppKey2", "AppKey1:orgId", context=report["log"]
    )
    assert "chime: intercepting" in report["log"]
    assert "[127.0.0.2] matched 127.0.0.2/32" in report["log"]


def test_chime_destination_http2(report: dict[str, Any]) -> None:
    chime = report["chime_h2"]
    assert chime["status"] == 200, report["log"]
    assert_chime_headers(
        chime["headers"], "AppKey1,AppKey2", "AppKey1:orgId", http2=True, context=report["log"]
    )


def test_other_destination_redirected_but_passed_through(report: dict[str, Any]) -> None:
    # Redirected to the proxy by the rules, but not Chime for the addon: relayed undecrypted
    # (curl trusted only the test CA, so it saw the real certificate).
    other = report["other"]
    assert other["status"] == 200, other["curl"] + report["log"]
    assert_no_chime_headers_added(other["headers"], context=report["log"])
    assert "Transparent Proxy listening at" in report["log"]


def test_only_the_redirected_client_reached_the_proxy(report: dict[str, Any]) -> None:
    # The proxy's own connections (as root, exempt) went straight to the servers: had they been
    # redirected back to the proxy, the requests above would have looped and failed.
    assert report["log"].count("chime: intercepting") == 2  # the HTTP/1.1 and HTTP/2 requests
