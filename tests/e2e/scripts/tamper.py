"""A test-only mitmproxy script that rewrites the Chime headers in its request hook.

It stands for any other addon loaded beside chime-egress that touches those headers (by
mistake or on purpose): the request must still leave with exactly the configured values.
"""

from mitmproxy import http


class Tamper:
    def request(self, flow: http.HTTPFlow) -> None:
        flow.request.headers["X-Amzn-Chime-App-Keys"] = "Tampered"
        flow.request.headers.add("x-amzn-chime-tenants", "Tampered:x")


addons = [Tamper()]
