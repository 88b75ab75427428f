"""Run inside a private network namespace (`unshare --net`) by test_transparent_mode.py.

Not a test module. In the namespace (its own loopback, nothing else): TLS echo servers on
127.0.0.2:443 (Chime) and 127.0.0.3:443 (not Chime), the nftables rules `chime-egress firewall
--hook output --proxy-user 0` prints, applied for real, and mitmdump --mode transparent running as
root, the user the rules exempt (the test virtualenv's interpreter lives under /root, so it cannot
run as another user here; in production the proxy has a user of its own). curl runs as `nobody`
and connects straight to the servers' addresses; the rules send it to the proxy. Prints one JSON
object with what happened; the test asserts on it.

usage: python -m tests.e2e.netns_transparent WORKDIR
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path

from tests.support.proxy import ADDON_SCRIPT, MITMDUMP, TEST_LOCAL_DESTINATIONS, clean_env
from tests.support.servers import EchoServer, free_port
from tests.support.tls import TestCA

CHIME_IP, OTHER_IP = "127.0.0.2", "127.0.0.3"
STARTUP_SECONDS = 30.0


def main(workdir: Path) -> dict[str, object]:
    report: dict[str, object] = {}
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    nobody = pwd.getpwnam("nobody")
    ca = TestCA.create(workdir / "test-ca")
    os.chmod(ca.cert_path, 0o644)

    # The addon's allowlist makes 127.0.0.2 Chime. The firewall's also redirects 127.0.0.3, so
    # the addon's own pass-through decision is exercised in transparent mode as well.
    config = workdir / "config"
    config.mkdir()
    (config / "allowlist.yaml").write_text(
        "apps:\n  - app_key: AppKey1\n    tenants: [orgId]\n  - app_key: AppKey2\n"
        "destinations:\n  cidrs: [127.0.0.2/32]\n",
        encoding="utf-8",
    )
    (config / "firewall.yaml").write_text(
        "apps:\n  - app_key: AppKey1\ndestinations:\n  cidrs: [127.0.0.2/32, 127.0.0.3/32]\n",
        encoding="utf-8",
    )
    confdir = workdir / "confdir"
    confdir.mkdir(mode=0o755)

    port = free_port()
    rules = subprocess.run(
        [
            str(Path(sys.executable).parent / "chime-egress"),
            "firewall",
            "--format",
            "nftables",
            "--proxy-port",
            str(port),
            "--ports",
            "443",
            "--hook",
            "output",
            "--proxy-user",
            "0",
            str(config / "firewall.yaml"),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    (workdir / "rules.nft").write_text(rules, encoding="utf-8")
    applied = subprocess.run(
        ["nft", "-f", str(workdir / "rules.nft")], capture_output=True, text=True, timeout=60
    )
    report["nft_rc"] = applied.returncode
    report["nft_stderr"] = applied.stderr
    if applied.returncode != 0:
        return report

    servers = [
        EchoServer(CHIME_IP, mode="tls", cert=ca.issue([CHIME_IP], stem="chime"), port=443),
        EchoServer(OTHER_IP, mode="tls", cert=ca.issue([OTHER_IP], stem="other"), port=443),
    ]
    for server in servers:
        server.start()
    log_path = workdir / "mitmdump.log"
    with log_path.open("wb") as log:
        proxy = subprocess.Popen(
            [
                str(MITMDUMP),
                "-s",
                str(ADDON_SCRIPT),
                "--mode",
                "transparent",
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                str(port),
                "--set",
                f"confdir={confdir}",
                "--set",
                f"chime_allowlist={config / 'allowlist.yaml'}",
                "--set",
                f"chime_local_destinations={TEST_LOCAL_DESTINATIONS}",
                "--set",
                f"ssl_verify_upstream_trusted_ca={ca.cert_path}",
            ],
            cwd=workdir,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while time.monotonic() < deadline and proxy.poll() is None:
                if re.search(r"listening at", log_path.read_text("utf-8", "replace")):
                    break
                time.sleep(0.1)
            time.sleep(0.5)
            mitm_ca = confdir / "mitmproxy-ca-cert.pem"
            report["chime"] = curl_as(
                nobody,
                f"https://{CHIME_IP}/transparent",
                mitm_ca,
                "--http1.1",
                "-H",
                "X-Amzn-Chime-App-Keys: Spoofed",
            )
            report["chime_h2"] = curl_as(
                nobody, f"https://{CHIME_IP}/transparent-h2", mitm_ca, "--http2"
            )
            report["other"] = curl_as(
                nobody, f"https://{OTHER_IP}/transparent-other", ca.cert_path, "--http1.1"
            )
        finally:
            proxy.terminate()
            try:
                proxy.wait(10)
            except subprocess.TimeoutExpired:
                proxy.kill()
                proxy.wait(10)
            for server in servers:
                server.stop()
    report["log"] = log_path.read_text("utf-8", "replace")
    return report


def curl_as(user: pwd.struct_passwd, url: str, cacert: Path, *args: str) -> dict[str, object]:
    """curl as `user`, trusting only `cacert`; the echo server's JSON view of the request."""
    empty = cacert.parent / "empty-capath"
    empty.mkdir(exist_ok=True)
    cacert.chmod(0o644)
    command = ["curl", "-sS", "--max-time", "15", "--noproxy", "", "--cacert", str(cacert)]
    command += ["--capath", str(empty), "--write-out", "\n%{http_code}", *args, url]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=clean_env({"HOME": "/"}),
        timeout=60,
        user=user.pw_uid,
        group=user.pw_gid,
        extra_groups=[],
        check=False,
    )
    body, _, status = result.stdout.rpartition("\n")
    try:
        headers = json.loads(body)["headers"]
    except ValueError:
        headers = None
    return {
        "status": int(status) if status.isdigit() else 0,
        "headers": headers,
        "curl": f"$ {' '.join(command)}\nexit {result.returncode}\n{result.stderr}\n{body[:2000]}",
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]))))
