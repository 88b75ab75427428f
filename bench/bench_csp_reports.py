"""Peak memory of mitmdump while one client sends a huge chunked CSP violation report (issue 16).

    python bench/bench_csp_reports.py [--megabytes 400] [--checkout DIR] [--stream-large-bodies 1m]

Everything on loopback: an upstream "app" (http.server, answers 404 and records what reaches it)
on 127.0.0.1, and mitmdump from the same environment as this Python in reverse mode in front of
it with the CSP addon of --checkout (default: this repository; give an export of another commit
to compare), collecting reports on /chime-csp-reports. The client sends one POST there with
`Transfer-Encoding: chunked` and --megabytes of a JSON string, 1 MiB a chunk, until the proxy
stops taking it. Reported: mitmdump's VmRSS before and VmHWM (peak resident memory) after, the
bytes the proxy took, its answer's status line (none when it closed the connection), and whether
the report reached the app. Needs Linux (/proc).
"""

from __future__ import annotations

import argparse
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import ClassVar

from benchlib import REPO, display_command, print_provenance

MIB = 1024 * 1024
REPORT_PATH = "/chime-csp-reports"


class _App(http.server.BaseHTTPRequestHandler):
    reached: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.reached.append(self.path)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def memory_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.M)
    assert match, status
    return int(match.group(1))


def send_report(port: int, megabytes: int) -> tuple[int, float, str]:
    """(body bytes the proxy took, seconds that took, its status line or "")."""
    sent = 0
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            f"POST {REPORT_PATH} HTTP/1.1\r\nHost: app.test\r\n"
            "Content-Type: application/csp-report\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        )
        chunk = b"%x\r\n" % MIB + b"x" * MIB + b"\r\n"
        try:
            opening = b'{"csp-report": "'
            sock.sendall(b"%x\r\n" % len(opening) + opening + b"\r\n")
            for _ in range(megabytes):
                sock.sendall(chunk)
                sent += MIB
            sock.sendall(b'2\r\n"}\r\n0\r\n\r\n')
        except OSError:
            pass
        seconds = time.monotonic() - started
        answer = b""
        sock.settimeout(5)  # the answer, if any, comes at once; keep-alive would hold the read
        try:
            while data := sock.recv(65536):
                answer += data
        except OSError:
            pass
    return sent, seconds, answer.split(b"\r\n", 1)[0].decode("latin-1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=400)
    parser.add_argument("--checkout", type=Path, default=REPO)
    parser.add_argument("--stream-large-bodies", default="")
    args = parser.parse_args()
    print_provenance("2 cores (shared), loopback")
    checkout = args.checkout.resolve()
    print(f"checkout measured: {checkout}")

    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    confdir = Path(tempfile.mkdtemp(prefix="bench-csp-reports-"))
    command = [
        str(Path(sys.executable).parent / "mitmdump"),
        "-s",
        str(checkout / "addon" / "chime_csp.py"),
        "--mode",
        f"reverse:http://127.0.0.1:{app.server_address[1]}",
        "--listen-host",
        "127.0.0.1",
        "--listen-port",
        "0",
        "--set",
        f"confdir={confdir}",
        "--set",
        "chime_csp_hosts=*",
        "--set",
        f"chime_csp_report_path={REPORT_PATH}",
        "--set",
        "flow_detail=0",
    ]
    if args.stream_large_bodies:
        command += ["--set", f"stream_large_bodies={args.stream_large_bodies}"]
    print(f"proxy: {display_command(command)}")
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    proxy = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proxy.stdout is not None
        port = 0
        for line in proxy.stdout:
            if match := re.search(r"listening at .*:(\d+)", line):
                port = int(match.group(1))
                break
        assert port, "mitmdump did not start"
        time.sleep(1)
        before = memory_kib(proxy.pid, "VmRSS")
        sent, seconds, status = send_report(port, args.megabytes)
        time.sleep(1)
        peak = memory_kib(proxy.pid, "VmHWM")
    finally:
        proxy.terminate()
        proxy.wait(10)
        app.shutdown()
        shutil.rmtree(confdir, ignore_errors=True)
    print(f"chunked report of {args.megabytes} MiB")
    print(f"  body bytes the proxy took: {sent / MIB:.0f} MiB in {seconds:.1f} s")
    print(f"  proxy's answer: {status or '(none: connection closed)'}")
    print(f"  reached the app: {'yes' if _App.reached else 'no'}")
    print(f"  mitmdump VmRSS before: {before / 1024:.0f} MiB, VmHWM after: {peak / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
