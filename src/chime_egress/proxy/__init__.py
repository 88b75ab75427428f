"""The mitmproxy glue: the addon that routes each connection and adds the headers.

Only this package (and `chime_egress.csp.addon`) imports mitmproxy. It decides with the pure
`chime_egress.policy` objects and keeps no state beyond the current policy and per-connection
records that die with their connections.
"""
