"""A proxy auto-config (PAC) file that sends Chime traffic, and only it, to the proxy."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..policy.compiled import Policy
from .addresses import ProxyAddress, collapsed_networks, source_comment

DEFAULT_PAC_HOSTS: tuple[str, ...] = ("*.chime.aws",)


def _js_string(text: str) -> str:
    """A JavaScript string literal of `text`: JSON's, ASCII only, so no quote, backslash, line
    terminator (U+2028 and U+2029 included, which end a line in older JavaScript) or other
    character can leave the string, whatever validated it before."""
    return json.dumps(text, ensure_ascii=True)


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
        f"// {source_comment(policy, config)}.",
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
