"""What the proxy enforces, as plain data: pure Python, no mitmproxy, no I/O beyond reading files.

The allowlist and its identifiers, the Chime destination ranges, the two headers built from them,
the per-network policies, Chime's own accept/403 rules, and the recognition of media tunnels.
Everything here is tested without sockets; the proxy (`chime_egress.proxy`) and the CLI
(`chime_egress.cli`) build on it, never the other way round.
"""
