"""A test-only mitmproxy script: changes options at run time, as mitmproxy's `set` command does.

`GET http://control.invalid/set?SPEC[&SPEC...]` (SPEC like `tcp_hosts=.*`, URL-encoded; repeat
a sequence option's SPEC for each item) applies them with `ctx.options.set` (what the console's
and mitmweb's `set` use) and answers 200 with the option's value afterwards, or 409 with
mitmproxy's error when the change was refused (and rolled back).
"""

import json
from urllib.parse import unquote

from mitmproxy import ctx, exceptions, http

HOST = "control.invalid"


class Control:
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.request.pretty_host != HOST or not flow.request.path.startswith("/set?"):
            return
        specs = [unquote(part) for part in flow.request.path.split("?", 1)[1].split("&")]
        name = specs[0].split("=", 1)[0]
        try:
            ctx.options.set(*specs)
        except exceptions.OptionsError as error:
            status, outcome = 409, str(error)
        else:
            status, outcome = 200, "applied"
        value = getattr(ctx.options, name, None)
        body = json.dumps({"outcome": outcome, "value": value}, default=str)
        flow.response = http.Response.make(status, body, {"Content-Type": "application/json"})


addons = [Control()]
