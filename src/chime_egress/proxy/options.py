"""The addon's options, and the mitmproxy settings it refuses because they would undo the headers.

Every chime_* option is a `str`, validated in `configure`: a typed option's malformed `--set`
value makes mitmproxy drop a whole `-s` script silently (mitmproxy issue 8013), and that is a
proxy that adds no headers. An unknown chime_* option (a typo) is refused too: mitmproxy would
keep it waiting for an addon that never defines it, and the proxy would run on the defaults.

mitmproxy's own options are free, except the few that could let a Chime-bound request leave
without exactly the configured headers; `refused_settings` names them and why. The list was made
by reading mitmproxy 11's and 12's option lists (`mitmdump --options`) option by option; the
docs/operations.md repeats it, with the reasons.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..policy.headers import CHIME_HEADER_NAMES
from ..policy.ranges import CHIME_DOMAIN, canonical_host, is_chime_name


@dataclass(frozen=True)
class OptionSpec:
    name: str
    default: str
    help: str


DEFAULT_ALLOWLIST = "config/allowlist.yaml"
DEFAULT_RELOAD_INTERVAL = "1"
DEFAULT_CHECK_HOST = "chime-egress.invalid"
DEFAULT_DRAIN_SECONDS = "20"
MAX_DRAIN_SECONDS = 3600.0
DEFAULT_WEBSOCKET_RELAY = "tcp"
WEBSOCKET_RELAYS = ("tcp", "websocket")  # proxy/upgrades.py

OPTIONS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "chime_allowlist",
        DEFAULT_ALLOWLIST,
        "YAML allowlist of Chime AppKeys and TenantIDs, and the Chime destination ranges.",
    ),
    OptionSpec(
        "chime_reload_interval",
        DEFAULT_RELOAD_INTERVAL,
        "Seconds between checks for edits to the allowlist and ranges files.",
    ),
    OptionSpec(
        "chime_websocket_relay",
        DEFAULT_WEBSOCKET_RELAY,
        "How WebSocket messages on intercepted Chime connections are relayed after the upgrade "
        "(which gets the headers): 'tcp' relays the bytes without parsing frames; 'websocket' "
        "parses every message, as mitmproxy does by default.",
    ),
    OptionSpec(
        "chime_metrics",
        "",
        "Serve Prometheus metrics at http://HOST:PORT/metrics: PORT (on 127.0.0.1) or "
        "HOST:PORT, e.g. 0.0.0.0:9108 in a container. Empty: off.",
    ),
    OptionSpec(
        "chime_log_json",
        "",
        "Also write each of the addon's log records as one JSON object per line: '-' for "
        "standard output (with mitmdump -q), or a file to append to. Empty: off.",
    ),
    OptionSpec(
        "chime_local_destinations",
        "",
        "Loopback, link-local or unspecified addresses that clients may reach through the proxy, "
        "comma-separated (e.g. 127.0.0.2/32,::1); all others are refused, and so are the proxy's "
        "own listeners whatever this says. Empty: none.",
    ),
    OptionSpec(
        "chime_drain_seconds",
        DEFAULT_DRAIN_SECONDS,
        "On SIGTERM or SIGINT: stop accepting at once, let open connections go on for up to this "
        "many seconds (0 to 3600), then close them and exit 0. A second signal exits at once.",
    ),
    OptionSpec(
        "chime_check_host",
        DEFAULT_CHECK_HOST,
        "Host name the proxy answers itself (never forwarded): http://HOST/health for the health "
        "probe. Must not be a Chime name.",
    ),
)
OPTION_NAMES = frozenset(spec.name for spec in OPTIONS)
OPTION_PREFIX = "chime_"


def parse_allowlist_option(text: str) -> str:
    """chime_allowlist: a path; empty would leave the proxy without a configuration."""
    if not text.strip():
        raise ValueError(
            "chime_allowlist is empty: give the allowlist file, e.g. "
            "--set chime_allowlist=/etc/chime-egress/allowlist.yaml"
        )
    return text


def parse_reload_interval(text: str) -> float:
    """Seconds between checks of the allowlist files."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"chime_reload_interval must be seconds, not {text!r}") from None
    if not 0.05 <= seconds <= 5:
        raise ValueError("chime_reload_interval must be between 0.05 and 5 seconds")
    return seconds


def parse_drain_seconds(text: str) -> float:
    """chime_drain_seconds: how long open connections may go on after SIGTERM (0 to 3600)."""
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"chime_drain_seconds must be seconds, not {text!r}") from None
    if not 0 <= seconds <= MAX_DRAIN_SECONDS:  # also refuses nan
        raise ValueError(f"chime_drain_seconds must be between 0 and {MAX_DRAIN_SECONDS:g}")
    return seconds


def parse_websocket_relay(text: str) -> str:
    if text not in WEBSOCKET_RELAYS:
        raise ValueError(
            f"chime_websocket_relay must be one of {', '.join(WEBSOCKET_RELAYS)}, not {text!r}"
        )
    return text


def parse_check_host(text: str) -> str:
    """chime_check_host: a host name the proxy answers itself; never a Chime name."""
    host = canonical_host(text.strip())
    labels = host.split(".")
    if (
        not host
        or len(host) > 253
        or not all(
            label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
            for label in labels
        )
    ):
        raise ValueError(f"chime_check_host: {text!r} is not a host name")
    if is_chime_name(host) or host == CHIME_DOMAIN.lstrip("."):
        raise ValueError(f"chime_check_host: {text!r} is a Chime name, which must reach Chime")
    return host


def unknown_options(names: Iterable[str], known: Iterable[str] = OPTION_NAMES) -> list[str]:
    """A message for each chime_* name among `names` that is not `known` (a typo, say)."""
    known = sorted(name for name in known if name.startswith(OPTION_PREFIX))
    messages = []
    for name in sorted(names):
        if not name.startswith(OPTION_PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; the options are {', '.join(known)}"
        messages.append(f"unknown option {name}{hint}")
    return messages


# mitmproxy settings that could let a Chime-bound request leave without exactly our headers.

_CHIME_NAMES = tuple(name.lower() for name in CHIME_HEADER_NAMES)
_NOT_FOR_CHIME = (
    "the Chime addon decides itself which connections are decrypted, and every Chime-bound "
    "connection must be"
)
# option -> why a non-empty value is refused
_REFUSED_WHEN_SET: dict[str, str] = {
    "ignore_hosts": f"{_NOT_FOR_CHIME}: ignore_hosts could pass it through raw, without headers",
    "allow_hosts": f"{_NOT_FOR_CHIME}: allow_hosts could pass it through raw, without headers",
    "tcp_hosts": "tcp_hosts relays matching connections as raw TCP, so requests inside them "
    "reach Chime with whatever headers the client wrote",
    "udp_hosts": "udp_hosts relays matching connections as raw UDP, so HTTP/3 to Chime would "
    "leave untouched",
    "map_remote": "map_remote sends a request somewhere else after its destination was judged, "
    "so a request judged not Chime could be sent to Chime without headers",
}
# option -> (the value that is refused, why)
_REFUSED_VALUES: dict[str, tuple[object, str]] = {
    "validate_inbound_headers": (
        False,
        "without it mitmproxy accepts header names such as 'X-Amzn-Chime-App-Keys ' (a space "
        "before the colon), which escape the strip of client copies and which servers may read",
    ),
    "keep_alt_svc_header": (
        True,
        "Alt-Svc answers invite clients to switch to HTTP/3 over UDP, around the proxy",
    ),
}


@dataclass(frozen=True)
class RefusedSetting:
    option: str
    why: str

    def __str__(self) -> str:
        return f"{self.option}: refused: {self.why}"


def refused_settings(options: Mapping[str, object]) -> list[RefusedSetting]:
    """Every mitmproxy setting in `options` (name -> current value) that the addon refuses."""
    refused = []
    for option, why in _REFUSED_WHEN_SET.items():
        if options.get(option):
            refused.append(RefusedSetting(option, why))
    for option, (value, why) in _REFUSED_VALUES.items():
        if option in options and options[option] == value:
            refused.append(RefusedSetting(option, f"{option}={str(value).lower()}: {why}"))
    for option in ("modify_headers", "modify_body"):
        for spec in _as_list(options.get(option)):
            if _mentions_chime_header(spec):
                refused.append(
                    RefusedSetting(
                        option,
                        f"{spec!r} names a Chime header; only the Chime addon sets them",
                    )
                )
    return refused


REFUSED_OPTIONS = frozenset({*_REFUSED_WHEN_SET, *_REFUSED_VALUES, "modify_headers", "modify_body"})


def _as_list(value: object) -> Sequence[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(item) for item in value]
    return []


def _mentions_chime_header(spec: str) -> bool:
    # Any spelling a parser might fold to the header's name: case, and '-' written as '_' or
    # escaped in a regex ('X\-Amzn...'), as modify_body patterns are regular expressions.
    folded = re.sub(r"[\\_\s]", "", spec.lower()).replace("-", "")
    return any(name.replace("-", "") in folded for name in _CHIME_NAMES)
