"""The check page: what the proxy does for the person asking, as HTML for people.

A helpdesk asks a user to open http://chime-egress.invalid/ (the `chime_check_host`) in the
browser that has the problem: the page says what that browser gets from the proxy, which the
browser's developer tools never show (the headers are added after the request leaves it).
It is built from the check document (`ProxyEndpoint.check_document`) alone, which holds only the
asking client's own facts. Every value is escaped: AppKeys may contain `<`, `&` and quotes.
The page has no script and loads nothing; its policy allows its one inline style only.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any

_STYLE = (
    "body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:52em;padding:0 1em;"
    "color:#1b1b1b;background:#fff}"
    "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}"
    "table{border-collapse:collapse}th,td{text-align:left;vertical-align:top;padding:.3em .8em "
    ".3em 0}th{font-weight:600;white-space:nowrap}"
    "code,pre{font:13px/1.4 ui-monospace,monospace;background:#f2f2f2;padding:.1em .3em;"
    "overflow-wrap:anywhere}"
    "pre{padding:.6em;white-space:pre-wrap;word-break:break-all}"
    ".mode{font-weight:700}.enforce{color:#0a5d00}.observe{color:#8a5a00}"
)
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

# Served with the page: nothing but its own inline style, no scripts, no frames around it.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src '{STYLE_HASH}'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


def render_check_page(document: dict[str, Any]) -> str:
    """The page for a check document; every value from it is escaped."""
    client = document["client"]
    network = document["network"]
    configuration = document["configuration"]
    mode = str(network["mode"])
    rows = [
        ("Your address, as the proxy sees it", f"<code>{escape(client['address'])}</code>"),
        ("Network", _network(network)),
        ("Mode", f'<span class="mode {escape(mode)}">{escape(mode)}</span>'),
        ("Configuration loaded", escape(str(configuration["loaded_at"] or "not loaded"))),
        ("Chime ranges (syncToken)", escape(str(configuration["ranges_sync_token"] or "none"))),
        ("Proxy", f"chime-egress {escape(str(document['version']))}"),
    ]
    table = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<title>chime-egress: what this proxy does for you</title>"
        f"<style>{_STYLE}</style></head><body>"
        "<h1>What this proxy does for your Amazon Chime traffic</h1>"
        f'<table id="facts">{table}</table>'
        f"{_headers(document['headers'], mode)}"
        f"{_ca(document['ca_certificate'])}"
        '<p id="json">For scripts: <a href="/check.json">/check.json</a>.</p>'
        "</body></html>\n"
    )


def _network(network: dict[str, Any]) -> str:
    name = escape(str(network["name"]))
    if network.get("kind") == "identity":
        return f"{name} (an <code>identities</code> entry naming you or one of your groups)"
    if network["range"] is None:
        return f"{name} (the proxy's default settings)"
    return f"{name} (<code>{escape(str(network['range']))}</code>)"


def _headers(headers: list[dict[str, str]], mode: str) -> str:
    if not headers:
        why = (
            "observe mode: the proxy adds nothing and decrypts nothing"
            if mode == "observe"
            else "no app is listed for your network"
        )
        return f'<h2>Headers on your Chime requests</h2><p id="headers">None ({escape(why)}).</p>'
    lines = "\n".join(f"{escape(h['name'])}: {escape(h['value'])}" for h in headers)
    return (
        "<h2>Headers on your Chime requests</h2>"
        "<p>Every request from this browser to Amazon Chime's meeting addresses leaves the proxy "
        "with exactly these lines (HTTP/2 sends the same values under lowercase names); Chime "
        "refuses (403) meetings of apps and tenants they do not list. Your browser's developer "
        "tools do not show them: the proxy adds them after the request has left the browser.</p>"
        f'<pre id="headers">{lines}</pre>'
    )


def _ca(ca: dict[str, Any] | None) -> str:
    title = "<h2>The proxy's certificate authority</h2>"
    if ca is None:
        return f'{title}<p id="ca">Not available from this proxy.</p>'
    return (
        f'{title}<p id="ca">Your device must trust it for Chime to work through the proxy: '
        '<a href="/ca.pem">download the CA certificate</a> (PEM). Compare its fingerprint '
        "with the one your IT department publishes before installing it.</p>"
        f"<table><tr><th>Subject</th><td>{escape(str(ca['subject']))}</td></tr>"
        f"<tr><th>SHA-256</th><td><code>{escape(str(ca['sha256']))}</code></td></tr></table>"
    )
