"""`chime-egress pac`, `firewall`, `health` and `ca`: putting the proxy in the path, checking it,
and the CA certificate its clients must trust.

The PAC file and the firewall rules list the PrefixTable's own prefixes (chime_egress.deploy
renders them); `health` probes a running proxy without forwarding anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import __version__
from ..certificates import (
    CERT_NAME,
    DEFAULT_CONFDIR,
    OTHER_FORMATS,
    key_exposure,
    read_ca_certificate,
)
from ..deploy import addresses
from ..deploy.health import DEFAULT_CHECK_HOST, probe_proxy
from ..deploy.nftables import DEFAULT_REDIRECT_PORTS, render_nftables
from ..deploy.pac import DEFAULT_PAC_HOSTS, render_pac
from ..untrusted import printable
from .support import (
    EXIT_INVALID,
    EXIT_OK,
    LIST_HELP,
    ListAction,
    add_command,
    config_argument,
    config_path,
    epilog,
    format_argument,
    load_policy_or_report,
    print_error,
    seconds,
    typed,
)


def add_deploy_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `pac`, `firewall`, `health` and `ca` to the chime-egress command line."""
    _add_pac(commands)
    _add_firewall(commands)
    _add_health(commands)
    _add_ca(commands)


def _add_ca(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ca = add_command(
        commands,
        "ca",
        summary="where the proxy's CA certificate is, and its SHA-256 fingerprint",
        description=(
            "Print where mitmproxy keeps the proxy's CA certificate (the one clients must\n"
            "trust for the Chime connections it decrypts), its subject, validity and SHA-256\n"
            "fingerprint, to compare with what a client has installed. mitmproxy creates it on\n"
            "its first start in its confdir (--set confdir=DIR; ~/.mitmproxy by default).\n"
            "Distribute mitmproxy-ca-cert.pem (or .cer, .p12), never mitmproxy-ca.pem: that\n"
            "file holds the private key. A running proxy also serves the certificate at\n"
            "http://chime-egress.invalid/ca.pem (its check page)."
        ),
        epilog=epilog(ok="printed", invalid="no readable CA certificate in the confdir"),
    )
    ca.add_argument(
        "--confdir",
        default=DEFAULT_CONFDIR,
        metavar="DIR",
        help=f"mitmproxy's confdir, as given to the proxy (default: {DEFAULT_CONFDIR})",
    )
    format_argument(ca, "json is one object with the path and the fingerprint")
    ca.set_defaults(handler=_ca)


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
            "The proxy's check host (--check-host, chime-egress.invalid by default) is sent to\n"
            "the proxy too, so people can open its check page at http://chime-egress.invalid/.\n\n"
            "With several --proxy, browsers try them in order. There is deliberately no DIRECT\n"
            "fallback: when no proxy answers, Chime requests fail instead of leaving without\n"
            "the headers."
        ),
        epilog=epilog(ok="PAC file printed", invalid="invalid allowlist"),
    )
    pac.add_argument(
        "--proxy",
        required=True,
        action=ListAction,
        item=addresses.parse_proxy_address,
        metavar="HOST:PORT",
        help="the proxy browsers should use, e.g. proxy.example.com:8080; several for "
        f"fail-over ({LIST_HELP})",
    )
    pac.add_argument(
        "--host",
        action=ListAction,
        item=addresses.check_host_pattern,
        metavar="PATTERN",
        help=f"send host names matching these shExpMatch patterns to the proxy ({LIST_HELP}; "
        f"default: {', '.join(DEFAULT_PAC_HOSTS)})",
    )
    _check_host_argument(pac)
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
    firewall.set_defaults(handler=_firewall)


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
        action=ListAction,
        item=addresses.parse_port,
        default=DEFAULT_REDIRECT_PORTS,
        metavar="P",
        help=f"destination TCP ports to redirect ({LIST_HELP}; default: 80,443)",
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
    _check_host_argument(health)
    health.add_argument("--quiet", "-q", action="store_true", help="print nothing when healthy")
    format_argument(health, "json is one object with 'healthy' and 'detail'")
    health.set_defaults(handler=_health)


def _check_host_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check-host",
        type=typed(addresses.check_host_name),  # it is written into the probe's request line
        default=DEFAULT_CHECK_HOST,
        metavar="HOST",
        help="the host name the proxy answers itself (its check page and health probe), its "
        f"chime_check_host option (default: {DEFAULT_CHECK_HOST})",
    )


# pac


def _pac(args: argparse.Namespace) -> int:
    config = config_path(args.config)
    policy = load_policy_or_report(config)
    if policy is None:
        return EXIT_INVALID
    # The check host too: browsers using the PAC must reach the proxy's check page.
    hosts = tuple(dict.fromkeys([*(args.host or DEFAULT_PAC_HOSTS), args.check_host]))
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
    if args.format == "json":
        print(json.dumps({"healthy": health.healthy, "detail": health.detail}, indent=2))
        return EXIT_OK if health.healthy else EXIT_INVALID
    # The detail quotes what the probed process answered: whatever listens there chose it.
    detail = printable(health.detail)
    if not health.healthy:
        print_error(f"unhealthy: {detail}")
        return EXIT_INVALID
    if not args.quiet:
        print(f"healthy: {detail}")
    return EXIT_OK


# ca


def _ca(args: argparse.Namespace) -> int:
    confdir = Path(args.confdir).expanduser()
    try:
        certificate = read_ca_certificate(confdir)
    except FileNotFoundError:
        print_error(
            f"{confdir / CERT_NAME}: not found; mitmproxy creates it on its first start with "
            f"--set confdir={confdir}"
        )
        return EXIT_INVALID
    except (OSError, ValueError) as error:
        print_error(f"{confdir / CERT_NAME}: cannot read a PEM certificate: {error}")
        return EXIT_INVALID
    exposure = key_exposure(confdir)
    if exposure is not None:
        print_error(f"warning: {exposure}")
    if args.format == "json":
        others = [str(confdir / name) for name in OTHER_FORMATS if (confdir / name).exists()]
        print(json.dumps({**certificate.to_json(), "other_formats": others}, indent=2))
        return EXIT_OK
    print(f"certificate: {certificate.path}")
    for name in OTHER_FORMATS:
        if (confdir / name).exists():
            print(f"  the same as: {confdir / name}")
    print(f"subject: {certificate.subject}")
    print(f"valid: {certificate.not_before:%Y-%m-%d} to {certificate.not_after:%Y-%m-%d}")
    print(f"SHA-256 fingerprint: {certificate.sha256}")
    return EXIT_OK
