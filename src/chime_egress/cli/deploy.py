"""`chime-egress pac`, `firewall` and `health`: putting the proxy in the path, and checking it.

The PAC file and the firewall rules list the PrefixTable's own prefixes (chime_egress.deploy
renders them); `health` probes a running proxy without forwarding anything.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..deploy import addresses
from ..deploy.health import DEFAULT_CHECK_HOST, probe_proxy
from ..deploy.nftables import DEFAULT_REDIRECT_PORTS, render_nftables
from ..deploy.pac import DEFAULT_PAC_HOSTS, render_pac
from ..untrusted import printable
from .support import (
    EXIT_INVALID,
    EXIT_OK,
    add_command,
    config_argument,
    config_path,
    epilog,
    load_policy_or_report,
    print_error,
    seconds,
    typed,
)


def add_deploy_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `pac`, `firewall` and `health` to the chime-egress command line."""
    _add_pac(commands)
    _add_firewall(commands)
    _add_health(commands)


def _add_pac(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pac = add_command(
        commands,
        "pac",
        summary="print a proxy auto-config (PAC) file sending only Chime traffic to the proxy",
        description=(
            "Print a PAC file that sends requests for the proxy's Chime destinations to the\n"
            "proxy and everything else DIRECT: host names matching --host (*.chime.aws by\n"
            "default) by name, other names and IP literals by address. IPv4 prefixes are\n"
            "checked with isInNet; IPv6 prefixes with isInNetEx where the browser has it\n"
            "(Chrome, Edge), else with the file's own matcher. The prefixes are the proxy's,\n"
            "from the same allowlist and ranges file; regenerate after changing either.\n\n"
            "With several --proxy, browsers try them in order. There is deliberately no DIRECT\n"
            "fallback: when no proxy answers, Chime requests fail instead of leaving without\n"
            "the headers."
        ),
        epilog=epilog(ok="PAC file printed", invalid="invalid allowlist"),
    )
    pac.add_argument(
        "--proxy",
        required=True,
        action="append",
        type=typed(addresses.parse_proxy_address),
        metavar="HOST:PORT",
        help="the proxy browsers should use, e.g. proxy.example.com:8080 (repeat for fail-over)",
    )
    pac.add_argument(
        "--host",
        action="append",
        type=typed(addresses.check_host_pattern),
        metavar="PATTERN",
        help="send host names matching this shExpMatch pattern to the proxy (repeat; "
        f"default: {', '.join(DEFAULT_PAC_HOSTS)})",
    )
    config_argument(pac)
    pac.set_defaults(handler=_pac)


def _add_firewall(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    firewall = add_command(
        commands,
        "firewall",
        summary="print firewall rules redirecting Chime traffic to a transparent proxy",
        description=(
            "Print an nftables script that redirects TCP connections (ports 80 and 443 by\n"
            "default) bound for the proxy's Chime destinations, IPv4 and IPv6, to a local port\n"
            "where mitmdump runs with --mode transparent. It only prints: apply it yourself\n"
            "with `nft -f FILE`. Loading it again replaces its own table, inet chime_egress.\n\n"
            "  --hook prerouting (default): on a gateway the clients' traffic passes through\n"
            "  --hook output --proxy-user USER: for clients on the proxy's own machine; USER's\n"
            "      (the proxy's) connections are exempt, or they would loop back to the proxy"
        ),
        epilog=epilog(ok="rules printed", invalid="invalid allowlist"),
    )
    _firewall_arguments(firewall)
    firewall.set_defaults(handler=_firewall, parser=firewall)


def _firewall_arguments(firewall: argparse.ArgumentParser) -> None:
    firewall.add_argument(
        "--format",
        choices=("nftables",),
        default="nftables",
        help="the rule syntax (default: nftables)",
    )
    firewall.add_argument(
        "--proxy-port",
        required=True,
        type=typed(addresses.parse_port),
        metavar="N",
        help="the local port mitmdump --mode transparent listens on",
    )
    firewall.add_argument(
        "--ports",
        type=typed(addresses.parse_ports),
        default=DEFAULT_REDIRECT_PORTS,
        metavar="P,P",
        help="destination TCP ports to redirect (default: 80,443)",
    )
    firewall.add_argument(
        "--hook",
        choices=("prerouting", "output"),
        default="prerouting",
        help="prerouting: traffic routed through this machine; output: this machine's own",
    )
    firewall.add_argument(
        "--interface",
        type=typed(lambda text: addresses.check_nft_word(text, "interface name")),
        metavar="IFACE",
        help="only traffic arriving on (prerouting) or leaving by (output) this interface",
    )
    firewall.add_argument(
        "--proxy-user",
        type=typed(lambda text: addresses.check_nft_word(text, "user name or uid")),
        metavar="USER",
        help="the user mitmdump runs as; its traffic is not redirected (required with output)",
    )
    config_argument(firewall)


def _add_health(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    health = add_command(
        commands,
        "health",
        summary="check that a running proxy has the Chime addon in force (health checks)",
        description=(
            "Ask the proxy for http://CHECK_HOST/health, a page its Chime addon answers itself\n"
            "(never forwarded). Healthy when the addon answers that its configuration is loaded\n"
            "and usable; unhealthy when mitmproxy runs without the addon, when no allowlist is\n"
            "loaded, or when it enforces the shipped example AppKeys (every real app: 403).\n"
            "Needs an HTTP proxy listener (regular or upstream mode); for a transparent proxy,\n"
            "add a loopback listener, e.g. --mode regular@127.0.0.1:8081, and probe that."
        ),
        epilog=epilog(ok="healthy", invalid="unhealthy (the reason on stderr)"),
    )
    health.add_argument(
        "--proxy",
        type=typed(addresses.parse_proxy_address),
        default=addresses.parse_proxy_address("127.0.0.1:8080"),
        metavar="HOST:PORT",
        help="the proxy to probe (default: 127.0.0.1:8080)",
    )
    health.add_argument(
        "--timeout",
        type=typed(seconds),
        default=5.0,
        metavar="SECONDS",
        help="give up after this long (default: 5)",
    )
    health.add_argument(
        "--check-host",
        type=typed(addresses.check_host_name),  # it is written into the probe's request line
        default=DEFAULT_CHECK_HOST,
        metavar="HOST",
        help="the host name the proxy answers itself, its chime_check_host option "
        f"(default: {DEFAULT_CHECK_HOST})",
    )
    health.add_argument("--quiet", "-q", action="store_true", help="print nothing when healthy")
    health.set_defaults(handler=_health)


# pac


def _pac(args: argparse.Namespace) -> int:
    config = config_path(args.config)
    policy = load_policy_or_report(config)
    if policy is None:
        return EXIT_INVALID
    hosts = tuple(dict.fromkeys(args.host or DEFAULT_PAC_HOSTS))
    sys.stdout.write(render_pac(policy, str(config), args.proxy, hosts, __version__))
    return EXIT_OK


# firewall


def _firewall(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.hook == "output" and args.proxy_user is None:
        parser.error("--hook output needs --proxy-user (the proxy's own traffic must not loop)")
    config = config_path(args.config)
    policy = load_policy_or_report(config)
    if policy is None:
        return EXIT_INVALID
    sys.stdout.write(
        render_nftables(
            policy,
            str(config),
            args.proxy_port,
            ports=args.ports,
            hook=args.hook,
            interface=args.interface,
            proxy_user=args.proxy_user,
            version=__version__,
        )
    )
    return EXIT_OK


# health


def _health(args: argparse.Namespace) -> int:
    health = probe_proxy(args.proxy, args.timeout, args.check_host)
    # The detail quotes what the probed process answered: whatever listens there chose it.
    detail = printable(health.detail)
    if not health.healthy:
        print_error(f"unhealthy: {detail}")
        return EXIT_INVALID
    if not args.quiet:
        print(f"healthy: {detail}")
    return EXIT_OK
