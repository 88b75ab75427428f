"""What routes Chime traffic to the proxy, generated from the proxy's own policy.

`chime-egress pac` and `chime-egress firewall` print these; both take the prefixes from the very
PrefixTable the proxy matches against (load_policy), so the browsers or the gateway send the proxy
exactly the addresses it treats as Chime, no more and no fewer. `chime-egress health` uses
probe_proxy. Nothing here imports mitmproxy.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from .policy import Policy
from .ranges import IPNetwork

DEFAULT_PAC_HOSTS: tuple[str, ...] = ("*.chime.aws",)
DEFAULT_REDIRECT_PORTS: tuple[int, ...] = (80, 443)
NFT_TABLE = "chime_egress"

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
# shExpMatch patterns: host name characters and the wildcards * and ?.
_HOST_PATTERN = re.compile(r"^[A-Za-z0-9*?.-]{1,253}$")
# nftables interface names and user names, as they may appear unquoted in a rule.
_NFT_WORD = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")


@dataclass(frozen=True)
class ProxyAddress:
    """HOST:PORT of a proxy; an IPv6 host is kept without its brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_proxy_address(text: str) -> ProxyAddress:
    """HOST:PORT or [IPV6]:PORT; raises ValueError saying what is wrong."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected [IPV6]:PORT")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{text!r}: expected HOST:PORT")
        if ":" in host:
            raise ValueError(f"{text!r}: write an IPv6 address in brackets, [{host}]:{port_text}")
        if not _HOSTNAME.match(host):
            raise ValueError(f"{text!r}: {host!r} is not a host name or IPv4 address")
    port = parse_port(port_text, text)
    return ProxyAddress(host, port)


def parse_port(text: str, context: str | None = None) -> int:
    where = f"{context!r}: " if context is not None else ""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{where}{text!r} is not a port number (1 to 65535)")
    return int(text)


def parse_ports(text: str) -> tuple[int, ...]:
    """A comma-separated list of ports, e.g. 80,443; duplicates removed, order kept."""
    ports: list[int] = []
    for item in text.split(","):
        port = parse_port(item.strip())
        if port not in ports:
            ports.append(port)
    return tuple(ports)


def check_host_pattern(pattern: str) -> str:
    if not _HOST_PATTERN.match(pattern):
        raise ValueError(
            f"{pattern!r} is not a host name pattern (letters, digits, '-', '.', '*' and '?')"
        )
    return pattern.lower()


def check_nft_word(text: str, what: str) -> str:
    if not _NFT_WORD.match(text):
        raise ValueError(f"{text!r} is not a valid {what}")
    return text


def collapsed_networks(policy: Policy) -> tuple[list[IPNetwork], list[IPNetwork]]:
    """The policy's prefixes, IPv4 and IPv6, merged where they overlap or touch.

    Same membership as the proxy's PrefixTable (an address is Chime when inside any prefix), in
    the fewest networks: nftables refuses overlapping interval elements, and a PAC file checks
    each network in turn.
    """
    v4 = [p.network for p in policy.table.prefixes if isinstance(p.network, ipaddress.IPv4Network)]
    v6 = [p.network for p in policy.table.prefixes if isinstance(p.network, ipaddress.IPv6Network)]
    return list(ipaddress.collapse_addresses(v4)), list(ipaddress.collapse_addresses(v6))


def _source_comment(policy: Policy, config: str) -> str:
    token = f", ranges syncToken {policy.ranges.sync_token}" if policy.ranges else ""
    return f"from {config} ({len(policy.table)} prefixes{token})"


# PAC


def _js_string(text: str) -> str:
    # Every input is validated to plain ASCII without quotes or backslashes; escape anyway.
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _js_list(items: Sequence[tuple[str, str]]) -> str:
    """A JavaScript array literal, one (code, comment) item a line, without a trailing comma."""
    if not items:
        return "[]"
    lines = []
    for index, (code, comment) in enumerate(items):
        comma = "," if index < len(items) - 1 else ""
        lines.append(f"  {code}{comma}" + (f"  // {comment}" if comment else ""))
    return "[\n" + "\n".join(lines) + "\n]"


_PAC_BODY = r"""
// An IPv6 address as eight 16-bit numbers, or null. Used only where the browser has no
// isInNetEx (Microsoft's extension, which Chrome and Edge implement).
function chimeIPv6Words(address) {
  var parts = address.split("::");
  if (parts.length > 2) return null;
  var head = parts[0] === "" ? [] : parts[0].split(":");
  var tail = parts.length === 2 && parts[1] !== "" ? parts[1].split(":") : [];
  var last = tail.length ? tail : head;
  if (last.length && last[last.length - 1].indexOf(".") >= 0) {
    var v4 = last.pop().split(".");
    if (v4.length !== 4) return null;
    for (var k = 0; k < 4; k++) {
      if (!/^\d{1,3}$/.test(v4[k]) || parseInt(v4[k], 10) > 255) return null;
    }
    last.push(((parseInt(v4[0], 10) << 8) | parseInt(v4[1], 10)).toString(16));
    last.push(((parseInt(v4[2], 10) << 8) | parseInt(v4[3], 10)).toString(16));
  }
  var missing = 8 - head.length - tail.length;
  if (parts.length === 2 ? missing < 1 : missing !== 0) return null;
  var groups = head;
  for (var m = 0; m < missing; m++) groups = groups.concat(["0"]);
  groups = groups.concat(tail);
  var words = [];
  for (var i = 0; i < 8; i++) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(groups[i])) return null;
    words.push(parseInt(groups[i], 16));
  }
  return words;
}

function chimeInNet6(address, cidr) {
  if (typeof isInNetEx === "function") return isInNetEx(address, cidr);
  var slash = cidr.indexOf("/");
  var bits = parseInt(cidr.substring(slash + 1), 10);
  var a = chimeIPv6Words(address);
  var n = chimeIPv6Words(cidr.substring(0, slash));
  if (a === null || n === null) return false;
  for (var i = 0; i < 8 && bits > 0; i++, bits -= 16) {
    var mask = bits >= 16 ? 0xffff : (0xffff << (16 - bits)) & 0xffff;
    if ((a[i] & mask) !== (n[i] & mask)) return false;
  }
  return true;
}

function chimeIsChimeAddress(address) {
  var mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) address = mapped[1];  // IPv4-mapped IPv6: judged as IPv4, as the proxy does
  if (/^\d+\.\d+\.\d+\.\d+$/.test(address)) {
    for (var i = 0; i < CHIME_IPV4.length; i++) {
      if (isInNet(address, CHIME_IPV4[i][0], CHIME_IPV4[i][1])) return true;
    }
    return false;
  }
  if (address.indexOf(":") < 0) return false;
  for (var j = 0; j < CHIME_IPV6.length; j++) {
    if (chimeInNet6(address, CHIME_IPV6[j])) return true;
  }
  return false;
}

function FindProxyForURL(url, host) {
  var name = host.toLowerCase();
  if (name.charAt(0) === "[") name = name.substring(1, name.length - 1);  // [IPv6] literal
  if (name.indexOf("%") >= 0) name = name.substring(0, name.indexOf("%"));  // IPv6 zone id
  if (name.charAt(name.length - 1) === ".") name = name.substring(0, name.length - 1);
  for (var i = 0; i < CHIME_HOSTS.length; i++) {
    if (shExpMatch(name, CHIME_HOSTS[i])) return CHIME_PROXY;
  }
  var addresses;
  if (/^\d+\.\d+\.\d+\.\d+$/.test(name) || name.indexOf(":") >= 0) {
    addresses = [name];  // an IP literal: no lookup
  } else if (typeof dnsResolveEx === "function") {
    addresses = (dnsResolveEx(name) || "").split(";");  // every address, IPv4 and IPv6
  } else {
    addresses = [dnsResolve(name) || ""];  // most browsers: one IPv4 address
  }
  for (var j = 0; j < addresses.length; j++) {
    if (addresses[j] && chimeIsChimeAddress(addresses[j])) return CHIME_PROXY;
  }
  return "DIRECT";
}
"""


def render_pac(
    policy: Policy,
    config: str,
    proxies: Sequence[ProxyAddress],
    hosts: Sequence[str] = DEFAULT_PAC_HOSTS,
    version: str = "",
) -> str:
    """A PAC file: the policy's prefixes and `hosts` to the proxies in turn, the rest DIRECT.

    There is no DIRECT fallback after the proxies: when none answers, Chime requests fail rather
    than leave without the headers.
    """
    v4, v6 = collapsed_networks(policy)
    proxy_value = "; ".join(f"PROXY {proxy}" for proxy in proxies)
    lines = [
        f"// Proxy auto-config generated by chime-egress {version}",
        f"// {_source_comment(policy, config)}.",
        "// Sends Amazon Chime meeting traffic (the proxy's CHIME_MEETINGS prefixes, and the host",
        "// names below) to the chime-egress proxy and everything else DIRECT. Regenerate it",
        "// (chime-egress pac) whenever the allowlist's destinations or its ranges file change.",
        f"var CHIME_PROXY = {_js_string(proxy_value)};",
        f"var CHIME_HOSTS = {_js_list([(_js_string(h), '') for h in hosts])};",
        "var CHIME_IPV4 = "
        + _js_list(
            [
                (
                    f"[{_js_string(str(net.network_address))}, {_js_string(str(net.netmask))}]",
                    str(net),
                )
                for net in v4
            ]
        )
        + ";",
        f"var CHIME_IPV6 = {_js_list([(_js_string(str(net)), '') for net in v6])};",
    ]
    return "\n".join(lines) + "\n" + _PAC_BODY


# nftables


def render_nftables(
    policy: Policy,
    config: str,
    proxy_port: int,
    ports: Sequence[int] = DEFAULT_REDIRECT_PORTS,
    hook: str = "prerouting",
    interface: str | None = None,
    proxy_user: str | None = None,
    version: str = "",
) -> str:
    """An nft script: TCP `ports` to the policy's prefixes redirected to the local `proxy_port`.

    `prerouting` serves a gateway (the clients' traffic passes through this machine); `output`
    serves clients on the proxy's own machine, and must exempt the proxy's own user, or its
    connections to Chime would be redirected back to itself.
    """
    if hook not in ("prerouting", "output"):
        raise ValueError(f"hook must be prerouting or output, not {hook!r}")
    if hook == "output" and proxy_user is None:
        raise ValueError("the output hook needs the proxy's user (its own traffic must pass)")
    v4, v6 = collapsed_networks(policy)
    port_set = "{ " + ", ".join(str(port) for port in ports) + " }"
    match = ""
    if interface is not None:
        match += f'iifname "{interface}" ' if hook == "prerouting" else f'oifname "{interface}" '
    if proxy_user is not None:
        match += f"meta skuid != {proxy_user} "
    priority = "dstnat" if hook == "prerouting" else "-100"
    out = [
        "#!/usr/sbin/nft -f",
        f"# Generated by chime-egress {version}",
        f"# {_source_comment(policy, config)}.",
        f"# Redirects TCP {', '.join(map(str, ports))} bound for Amazon Chime's meeting ranges to "
        f"port {proxy_port}",
        "# on this machine, where mitmdump runs in transparent mode:",
        f"#   mitmdump --mode transparent --listen-port {proxy_port} "
        "-s addon/chime_headers.py --set chime_allowlist=...",
        "# Apply with `nft -f FILE` (check first with `nft -c -f FILE`). Loading it again replaces",
        f"# the table inet {NFT_TABLE} and touches nothing else; `nft delete table inet "
        f"{NFT_TABLE}`",
        "# removes it. Regenerate after every change to the allowlist's destinations.",
    ]
    if hook == "prerouting":
        out.append(
            "# On a gateway: enable forwarding (net.ipv4.ip_forward=1, "
            "net.ipv6.conf.all.forwarding=1)."
        )
    out += [
        f"table inet {NFT_TABLE}",
        f"delete table inet {NFT_TABLE}",
        f"table inet {NFT_TABLE} {{",
    ]
    for family, nets in (("ipv4", v4), ("ipv6", v6)):
        out += [
            f"    set chime_{family} {{",
            f"        type {family}_addr",
            "        flags interval",
        ]
        if nets:
            out.append("        elements = { " + ", ".join(str(net) for net in nets) + " }")
        out.append("    }")
    out += [
        f"    chain {hook} {{",
        f"        type nat hook {hook} priority {priority}; policy accept;",
    ]
    for family, address in (("ipv4", "ip"), ("ipv6", "ip6")):
        out.append(
            f"        {match}{address} daddr @chime_{family} tcp dport {port_set} "
            f"redirect to :{proxy_port}"
        )
    out += ["    }", "}"]
    return "\n".join(out) + "\n"


# health


@dataclass(frozen=True)
class Health:
    healthy: bool
    detail: str


HEALTH_REQUEST = (
    b"GET /chime-egress-health HTTP/1.1\r\n"
    b"User-Agent: chime-egress-health\r\n"
    b"Connection: close\r\n\r\n"
)
_MAX_HEALTH_RESPONSE = 64 * 1024


def probe_proxy(proxy: ProxyAddress, timeout: float) -> Health:
    """Ask the proxy itself for an HTTP answer, without it connecting anywhere.

    The request has no Host header and no absolute URL, so mitmproxy cannot know a destination:
    it answers 400 itself, from its own event loop, with `Server: mitmproxy ...`. That proves the
    process accepts, parses and answers; no upstream is contacted and nothing is forwarded.
    """
    try:
        with socket.create_connection((proxy.host, proxy.port), timeout=timeout) as sock:
            sock.sendall(HEALTH_REQUEST)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < _MAX_HEALTH_RESPONSE:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as error:
        return Health(False, f"{proxy}: {error.strerror or error}")
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    status = re.match(r"^HTTP/1\.[01] (\d{3})", status_line)
    if status is None:
        shown = status_line[:80] or "nothing"
        return Health(False, f"{proxy}: answered {shown!r}, not HTTP")
    server = ""
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "server":
            server = value.strip()
    if not server.lower().startswith("mitmproxy"):
        return Health(False, f"{proxy}: an HTTP server that is not mitmproxy ({server or '?'})")
    return Health(True, f"{proxy}: {server} answered (HTTP {status.group(1)}, as expected)")
