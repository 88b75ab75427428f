"""What Chime accepts as an AppKey and a TenantId, and why each one is refused.

TenantId follows the AWS API model of CreateMeeting `TenantIds`. AppKeys have no published text
form, so they are opaque tokens restricted only by what the header grammar needs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import plural

TENANT_ID_MIN_LENGTH = 2
TENANT_ID_MAX_LENGTH = 256
TENANT_ID_PATTERN = re.compile(r"^(?!.*?(.)\1{3})[-_!@#$a-zA-Z0-9]*$")

# ',' ';' ':' separate entries in the two headers; anything outside printable ASCII cannot be
# sent safely in a header value.
_APP_KEY_FORBIDDEN = frozenset(",;:")


def app_key_problem(app_key: str) -> str | None:
    """Why `app_key` cannot be sent in the headers, or None when it can."""
    if not app_key:
        return "is empty; give the app's AppKey exactly as its vendor or AWS Support gave it"
    for position, char in enumerate(app_key, start=1):
        if char in _APP_KEY_FORBIDDEN:
            return f"contains {char!r} (character {position}), which separates header entries"
        if char.isspace():
            return f"contains whitespace (character {position}); AppKeys have none: copy it again"
        if not 0x21 <= ord(char) <= 0x7E:
            return f"contains {char!r} (character {position}); only printable ASCII is allowed"
    return None


def tenant_id_problem(tenant_id: str) -> str | None:
    """Why `tenant_id` is not a TenantId that CreateMeeting would accept, or None."""
    if not TENANT_ID_MIN_LENGTH <= len(tenant_id) <= TENANT_ID_MAX_LENGTH:
        return (
            f"is {plural(len(tenant_id), 'character')} long; a TenantId has "
            f"{TENANT_ID_MIN_LENGTH} to {TENANT_ID_MAX_LENGTH}"
        )
    if TENANT_ID_PATTERN.fullmatch(tenant_id) is None:
        bad = sorted({c for c in tenant_id if not (c.isascii() and (c.isalnum() or c in "-_!@#$"))})
        if bad:
            listed = ", ".join(repr(c) for c in bad)
            return f"contains {listed}; allowed are A-Z a-z 0-9 - _ ! @ # $"
        return "repeats a character four or more times in a row, which Chime does not allow"
    return None


def unused_identifier(base: str, taken: Iterable[str]) -> str:
    """`base`, or base2, base3...: an example identifier that the allowlist does not name."""
    names = set(taken)
    candidate, number = base, 1
    while candidate in names:
        number += 1
        candidate = f"{base}{number}"
    return candidate
