"""`chime-egress health` with hostile input: a check host that would split the probe's request,
and an answer whose text would steer the admin's terminal (issue 16)."""

from __future__ import annotations

import http.server
import json

from .support import assert_refused, run, serving


def test_a_check_host_with_a_line_break_is_refused() -> None:
    # Written into the request line and the Host header, it would add lines to the probe.
    result = run("health", "--check-host", "chime-egress.invalid\r\nX-Injected: 1")
    assert_refused(result, 2, "is not a host name")


class _HostileAnswer(http.server.BaseHTTPRequestHandler):
    """Answers the probe like the addon would, its problem text chosen by whoever listens."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "addon": "chime_headers",
                "status": "unhealthy",
                "problems": ["\x1b]0;pwned\x07\x1b[2Jall fine\u2028healthy"],
            }
        ).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_answer_is_shown_escaped() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostileAnswer)
    with serving(server) as url:
        result = run("health", "--proxy", url.removeprefix("http://"), "--timeout", "10")
    assert result.returncode == 1, result
    assert "\\x1b]0;pwned\\x07\\x1b[2Jall fine\\u2028healthy" in result.stderr
    assert all(line.isprintable() for line in result.stderr.split("\n")), result.stderr
