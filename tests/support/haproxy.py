"""deploy/haproxy.cfg made to run on loopback, for the scale-out tests and the benchmark through it.

The shipped configuration is used as it is, but for what only exists in a container: Docker's
DNS (its `resolvers` section and `server-template`) becomes one `server` line per replica on
loopback, and the frontend binds a loopback port. Its health check (`/ready` on each replica's
metrics port), balancing and timeouts are the shipped ones.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "haproxy.cfg"
LOOPBACK = "127.0.0.1"


def local_haproxy_config(port: int, replicas: list[tuple[int, int]]) -> str:
    """The shipped file, listening on `port`, with a server per (proxy port, metrics port)."""
    text = SHIPPED.read_text(encoding="utf-8")
    text = re.sub(r"\nresolvers docker\n(?:    .*\n)+", "\n", text)
    # HAProxy needs two descriptors per connection: fit maxconn to this machine's limit.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    fitting = min(20000, (hard - 100) // 2)
    text, count = re.subn(r"\n    maxconn 20000\n", f"\n    maxconn {fitting}\n", text)
    assert count == 1, "deploy/haproxy.cfg's maxconn line changed"
    assert "bind :8080" in text
    text = text.replace("bind :8080", f"bind {LOOPBACK}:{port}")
    template = re.search(
        r"    server-template chime \d+ chime-egress:8080 (check .*?) resolvers docker "
        r"init-addr none\n",
        text,
    )
    assert template is not None, "deploy/haproxy.cfg's server-template line changed"
    check = template.group(1)
    assert "port 9108" in check
    servers = "".join(
        f"    server chime{index} {LOOPBACK}:{proxy_port} "
        f"{check.replace('port 9108', f'port {metrics_port}')}\n"
        for index, (proxy_port, metrics_port) in enumerate(replicas)
    )
    return text.replace(template.group(0), servers)
