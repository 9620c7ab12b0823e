"""How stored values are shown to people on a terminal: as text that cannot act, and an entry's caller and call as
people name them. A caller chooses its own user agent and an item its own key, so a value may hold escape sequences
(which move the cursor, erase lines, retitle the window), bidi overrides (which reorder what is read) or zero-width
characters; each is written as `\\uXXXX`. The page (chalicelib/ui/index.html) does the same with the same
characters and names. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# C0 and C1 controls (ESC among them), DEL, soft hyphen, bidi marks, overrides and isolates, zero widths, BOM.
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")


def visible_text(value: object) -> str:
    """`str(value)` with every character that would act on a terminal, or hide or reorder text, as `\\uXXXX`."""
    return _HIDDEN.sub(lambda found: f"\\u{ord(found.group()):04x}", str(value))


def who(entry: Mapping[str, object]) -> str:
    """The caller as people name it: the user or session name (with the role a session was assumed from), else its
    ARN, principal id, or the AWS service that called."""
    name = next(
        (
            entry[field]
            for field in ("principal_name", "principal_arn", "principal_id", "invoked_by")
            if entry.get(field)
        ),
        "?",
    )
    issuer = entry.get("session_issuer_arn")
    if entry.get("principal_type") == "AssumedRole" and isinstance(issuer, str) and "/" in issuer:
        role = issuer.rsplit("/", 1)[1]
        if role and role != name:
            return f"{name} ({role})"
    return str(name)


def operation_text(entry: Mapping[str, object]) -> str:
    """The item's operation, with the call's name when it is not the operation's own (`Update (TransactWriteItems)`)."""
    operation = str(entry.get("operation"))
    event_name = entry.get("event_name")
    return operation if event_name in (None, f"{operation}Item") else f"{operation} ({event_name})"
