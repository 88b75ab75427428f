"""A test-only mitmproxy script that asks for every TLS connection to be passed through raw.

It stands for another addon beside chime-egress that sets `ignore_connection` (a generic
"don't decrypt" rule): a Chime-bound connection must still be intercepted and get the headers.
"""

from mitmproxy import tls


class PassThrough:
    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        data.ignore_connection = True


addons = [PassThrough()]
