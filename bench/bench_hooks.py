"""What the addon's own hooks cost, per request and per connection, measured in-process.

    python bench/bench_hooks.py [--repeats N] [--count N]

bench_proxy.py measures whole requests through mitmdump (about 2 ms of mitmdump CPU per
intercepted request), where a few microseconds of addon work vanish in the machine's noise. This
script times the hooks alone, dispatched the way mitmproxy dispatches them
(`AddonManager.invoke_addon`), with the root logger at DEBUG as mitmdump sets it and the
addon's logger at INFO, as the addon sets it under mitmdump's default termlog_verbosity:

per intercepted HTTP/1.1 request (hooks requestheaders, request, responseheaders, response):
  chime      this addon (connection already judged Chime), which strips and adds the headers
  modify-2   mitmproxy's ModifyHeaders with the two --modify-headers specs of bench_proxy.py
  modify-0   ModifyHeaders with no spec (what every mitmdump, config a included, also runs)
  The cost of config a over b is then chime + modify-0 - modify-2.
per connection (hooks http_connect and next_layer, on a fresh connection each time):
  chime/passthrough   the decision for a non-Chime destination (TCP relay, no decryption)
  chime/intercept     the decision for a Chime destination, ClientHello inspected for media
  builtin/ignore      mitmproxy's NextLayer with ignore_hosts '.*' (runs in config d, and in c)
Each figure is the median over --repeats of the mean over --count calls, minus the dispatch
cost of an addon without hooks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import mitmproxy.version  # noqa: E402
from bench_proxy import (  # noqa: E402
    ALLOWLIST,
    APP_KEYS,
    CHIME_HOST,
    MODIFY_HEADERS,
    OTHER_HOST,
    TENANTS,
)
from benchlib import print_provenance  # noqa: E402
from mitmproxy import connection, hooks, http  # noqa: E402
from mitmproxy.addons.modifyheaders import ModifyHeaders  # noqa: E402
from mitmproxy.addons.next_layer import NextLayer as BuiltinNextLayer  # noqa: E402
from mitmproxy.proxy import events, layer  # noqa: E402
from mitmproxy.proxy.context import Context  # noqa: E402
from mitmproxy.proxy.layers.http._hooks import (  # noqa: E402
    HttpConnectHook,
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHeadersHook,
    HttpResponseHook,
)
from mitmproxy.test import taddons, tflow, tutils  # noqa: E402

from chime_egress.proxy.addon import ChimeHeaders  # noqa: E402


def request_hooks(host: str) -> tuple[http.HTTPFlow, list[hooks.Hook]]:
    """The four hooks of one request; the request hooks see the flow before its response."""
    request, response = chime_flow(host), chime_flow(host)
    response.server_conn = request.server_conn
    response.response = tutils.tresp()
    return request, [
        HttpRequestHeadersHook(request),
        HttpRequestHook(request),
        HttpResponseHeadersHook(response),
        HttpResponseHook(response),
    ]


def client_hello() -> bytes:
    """The bytes of a real ClientHello offering http/1.1, as the bench client sends it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def chime_flow(host: str) -> http.HTTPFlow:
    flow = tflow.tflow()
    flow.server_conn.address = (host, 443)
    flow.server_conn.peername = (host, 443)
    flow.request.host = host
    flow.request.port = 443
    flow.request.scheme = "https"
    flow.request.headers.clear()
    flow.request.headers["Host"] = f"{host}:443"
    flow.request.headers["User-Agent"] = "chime-egress-bench"
    flow.request.headers["Accept"] = "*/*"
    return flow


async def timed(calls: int, body: Callable[[int], Awaitable[Any]]) -> float:
    """Mean seconds per call of body(i) over `calls` calls."""
    start = time.perf_counter()
    for i in range(calls):
        await body(i)
    return (time.perf_counter() - start) / calls


class NoHooks:
    """An addon without hooks: the dispatch cost subtracted from every figure."""


async def main_async(args: argparse.Namespace) -> int:
    logging.getLogger().setLevel(logging.DEBUG)  # as mitmdump does; handlers filter later
    quiet = logging.NullHandler()
    quiet.setLevel(logging.WARNING)
    logging.getLogger().addHandler(quiet)

    workdir = Path(tempfile.mkdtemp(prefix="chime-hooks-"))
    allowlist = workdir / "allowlist.yaml"
    allowlist.write_text(ALLOWLIST)
    hello = client_hello()

    chime = ChimeHeaders()
    modify2, modify0 = ModifyHeaders(), ModifyHeaders()
    builtin = BuiltinNextLayer()
    nohooks: object = NoHooks()
    results: dict[str, list[float]] = {}
    with taddons.context(loadcore=True) as tctx:
        manager = tctx.master.addons
        manager.add(chime, modify2, builtin)
        tctx.configure(chime, chime_allowlist=str(allowlist))
        # Under mitmdump the addon follows termlog_verbosity (default "info"), so a passed-through
        # connection builds no DEBUG record; this context has no termlog, so set what it would.
        logging.getLogger("chime_egress").setLevel(logging.INFO)
        tctx.configure(modify2, modify_headers=list(MODIFY_HEADERS))
        # The addon stays loaded and configured but leaves the chain, so that ignore_hosts can be
        # switched on for the built-in NextLayer (the addon rightly refuses that option).
        manager.remove(chime)

        # Per request. The flow's connection is judged once, as on a real connection.
        flow, per_request = request_hooks(CHIME_HOST)
        for event in per_request:
            await manager.invoke_addon(chime, event)
        got = (
            flow.request.headers.get("X-Amzn-Chime-App-Keys"),
            flow.request.headers.get("X-Amzn-Chime-Tenants"),
        )
        if got != (APP_KEYS, TENANTS):
            print(f"the addon did not add the expected headers: {got}")
            return 1
        modify_flow, modify_request = request_hooks(CHIME_HOST)
        for event in modify_request:
            await manager.invoke_addon(modify2, event)
        assert modify_flow.request.headers.get("X-Amzn-Chime-Tenants") == TENANTS

        def request_body(
            addon: object, flow_: http.HTTPFlow, events_: list[hooks.Hook]
        ) -> Callable[[int], Any]:
            request = flow_.request
            pristine = chime_flow(CHIME_HOST).request.headers  # as the client sent them

            async def body(_: int) -> None:
                request.headers = pristine.copy()  # a new request each time (also in dispatch)
                for event in events_:
                    await manager.invoke_addon(addon, event)

            return body

        request_cases: list[tuple[str, object, http.HTTPFlow, list[hooks.Hook]]] = [
            ("dispatch", nohooks, flow, per_request),
            ("chime", chime, flow, per_request),
            ("modify-2", modify2, modify_flow, modify_request),
            ("modify-0", modify0, *request_hooks(CHIME_HOST)),
        ]
        # Repeats outermost, so that a burst of someone else's load hits every case alike.
        for _ in range(args.repeats):
            for name, addon, flow_, events_ in request_cases:
                results.setdefault(f"request/{name}", []).append(
                    await timed(args.count, request_body(addon, flow_, events_))
                )

        # Per connection: fresh client, server and NextLayer objects for every call.
        def fresh(host: str) -> tuple[http.HTTPFlow, layer.NextLayer]:
            client = tflow.tclient_conn()
            client.alpn = client.sni = client.tls_version = client.cipher = None  # TLS not yet
            client.timestamp_tls_setup = None
            server = connection.Server(address=(host, 443))
            server.peername = (host, 443)
            context = Context(client, tctx.options)
            context.server = server
            context.layers = [object()]  # type: ignore[list-item]  # stands for the HTTP proxy layers above the tunnel
            nextlayer = layer.NextLayer(context)
            nextlayer.events.append(events.DataReceived(client, hello))
            connect = tflow.tflow(client_conn=client, server_conn=server)
            connect.request.method = "CONNECT"
            return connect, nextlayer

        def connection_body(
            addon: object, items: list[tuple[http.HTTPFlow, layer.NextLayer]]
        ) -> Callable[[int], Any]:
            async def body(i: int) -> None:
                connect, nextlayer = items[i]
                await manager.invoke_addon(addon, HttpConnectHook(connect))
                await manager.invoke_addon(addon, layer.NextLayerHook(nextlayer))

            return body

        def check(
            items: list[tuple[http.HTTPFlow, layer.NextLayer]], passthrough: bool, name: str
        ) -> None:
            for _, nextlayer in items:
                relayed = type(nextlayer.layer).__name__ == "TCPLayer"
                if relayed != passthrough:
                    raise SystemExit(f"{name}: unexpected decision {nextlayer.layer!r}")

        connection_cases: list[tuple[str, object, str, bool | None, list[str]]] = [
            ("dispatch", nohooks, OTHER_HOST, None, []),
            ("chime/passthrough", chime, OTHER_HOST, True, []),
            ("chime/intercept", chime, CHIME_HOST, False, []),
            ("builtin/ignore", builtin, OTHER_HOST, True, [".*"]),
        ]
        count = max(1, args.count // 10)
        for _ in range(args.repeats):
            for name, addon, host, passthrough, ignore_hosts in connection_cases:
                tctx.options.update(ignore_hosts=ignore_hosts)
                items = [fresh(host) for _ in range(count)]
                results.setdefault(f"connection/{name}", []).append(
                    await timed(count, connection_body(addon, items))
                )
                if passthrough is not None:
                    check(items, passthrough, name)

    medians = {key: statistics.median(values) * 1e6 for key, values in results.items()}
    print_provenance(
        f"nproc {len(os.sched_getaffinity(0))}, Python {platform.python_version()}, "
        f"mitmproxy {mitmproxy.version.VERSION}"
    )
    print(
        f"median of {args.repeats} x mean of {args.count:,} calls (connections: "
        f"{max(1, args.count // 10):,}); dispatch cost subtracted\n"
    )
    print("per intercepted request (requestheaders, request, responseheaders, response):")
    dispatch = medians["request/dispatch"]
    print_costs(medians, "request", ("chime", "modify-2", "modify-0"), 10)
    extra = (
        medians["request/chime"]
        + medians["request/modify-0"]
        - medians["request/modify-2"]
        - dispatch
    )
    print(f"  config a minus config b: {extra:+.2f} µs per request")
    print(
        f"  (baseline subtracted: dispatch of the 4 hooks to an addon without them, and a fresh"
        f" copy of the request headers: {dispatch:.2f} µs)"
    )
    print("per connection (http_connect + next_layer):")
    print_costs(
        medians, "connection", ("chime/passthrough", "chime/intercept", "builtin/ignore"), 18
    )
    return 0


def print_costs(medians: dict[str, float], group: str, keys: Sequence[str], width: int) -> None:
    """Each case of `group` in µs, less the group's dispatch baseline."""
    for key in keys:
        cost = medians[f"{group}/{key}"] - medians[f"{group}/dispatch"]
        print(f"  {key:{width}} {cost:6.2f} µs")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--count", type=int, default=20_000, help="requests per repeat")
    args = parser.parse_args()
    if not (1 <= args.repeats <= 100 and 10 <= args.count <= 1_000_000):
        parser.error("--repeats 1..100, --count 10..1,000,000")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
