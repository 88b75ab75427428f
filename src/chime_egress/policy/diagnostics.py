"""Why Chime may have answered 403: the documented rules that could refuse under the headers sent.

The proxy cannot see which app or tenant a meeting belongs to (that lives in Chime), so the hint
lists the refusing rules that the headers sent make possible, with what to check for each.
"""

from __future__ import annotations

import os
import shlex

from .client_policy import ClientPolicy
from .verdict import APP_KEYS_NOT_LISTED, TENANTS_OTHER_TENANTS, TENANTS_SESSION_WITHOUT_TENANTS

_SHOWN_APPS = 5


def refusal_hint(policy: ClientPolicy, client_address: str, config: str) -> str:
    """`config` is the allowlist the proxy runs on: the suggested command must check that file,
    from wherever the admin runs it, not the command's default."""
    apps = policy.apps
    keys = ", ".join(app.app_key for app in apps[:_SHOWN_APPS])
    if len(apps) > _SHOWN_APPS:
        keys += f", ... ({len(apps)} in all)"
    hints = [
        f"the meeting's app is not listed for {policy.kind} {policy.name} (AppKeys {keys}): add "
        f"its AppKey if the organisation uses it ({APP_KEYS_NOT_LISTED.code})"
    ]
    limited = [app for app in apps if app.tenants]
    if limited:
        shown = "; ".join(f"{app.app_key}: {', '.join(app.tenants)}" for app in limited[:3])
        if len(limited) > 3:
            shown += f"; ... ({len(limited)} apps with tenants)"
        hints.append(
            f"or its app is listed with tenants ({shown}) and the meeting has none of them "
            f"({TENANTS_OTHER_TENANTS.code}, {TENANTS_SESSION_WITHOUT_TENANTS.code})"
        )
    who = f"--client {client_address}"
    if policy.kind == "identity":
        who = f"--user USER --group GROUP {who}"  # the names are not the hint's to show
    command = (
        f"chime-egress explain --config {shlex.quote(os.path.abspath(config))} "
        f"{who} --app-key KEY [--tenant ID]"
    )
    return f"{' '.join(hints)}; check a meeting with: {command}"
