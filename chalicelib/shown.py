"""How stored values are shown to people on a terminal: as text that cannot act, and an entry's caller and call as
people name them. A caller chooses its own user agent and an item its own key, so a value may hold escape sequences
(which move the cursor, erase lines, retitle the window), bidi overrides (which reorder what is read) or zero-width
characters; each is written as `\\uXXXX`. The page (chalicelib/ui/index.html) does the same with the same
characters and names. Pure.
"""

from __future__ import annotations

import json
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


# What a history's line shows of a call's attributes, in characters; the whole record is in its details.
MAX_ATTRIBUTES_CHARS = 200
_PLACEHOLDER = re.compile(r"#[A-Za-z0-9_]+")
_BARE_NAME = re.compile(r"[A-Za-z0-9_-]+")
# The operations whose condition expression a line shows.
_CONDITIONED = ("Put", "Update", "Delete", "ConditionCheck")


def attributes_text(entry: Mapping[str, object]) -> str:
    """What a call named of its item's attributes, as one line: an update's expression with each `#placeholder`
    written as the attribute it stands for (`SET Rating = :r REMOVE Price`; values are never logged, so `:values`
    stay), a put's attribute names, a PartiQL statement (its literals redacted by CloudTrail), then the condition a
    write or condition check made, likewise (`; condition attribute_exists(Rating)`: why a call failed with
    `ConditionalCheckFailedException`); else empty. A name that is not plain letters, digits, `_` and `-` is quoted
    as JSON, so that no name can read as part of the expression. At most MAX_ATTRIBUTES_CHARS characters, then `…`."""
    operation, update, names = entry.get("operation"), entry.get("update_expression"), entry.get("attribute_names")
    condition = entry.get("condition_expression")
    placeholders: dict[str, str] = {}
    if (operation == "Update" and isinstance(update, str) and update) or (isinstance(condition, str) and condition):
        placeholders = _expression_names(entry.get("request_parameters"))

    def named(expression: str) -> str:
        return _PLACEHOLDER.sub(lambda found: placeholders.get(found.group()) or found.group(), expression)

    parts = []
    if operation == "Update" and isinstance(update, str) and update:
        parts.append(named(update))
    elif operation in ("Put", "Update") and isinstance(names, list) and names:
        parts.append(", ".join(shown_name(str(name)) for name in names))
    elif operation == "Statement" and isinstance(entry.get("statement"), str):
        parts.append(str(entry["statement"]))
    if operation in _CONDITIONED and isinstance(condition, str) and condition:
        parts.append(f"condition {named(condition)}")
    text = "; ".join(parts)
    return text if len(text) <= MAX_ATTRIBUTES_CHARS else text[:MAX_ATTRIBUTES_CHARS] + "…"


def _expression_names(parameters: object) -> dict[str, str]:
    """Each placeholder of the item's `expressionAttributeNames` (in any ASCII case: AWS's examples mix them) and its
    name as shown, from the request parameters as stored; empty when they are cut short or hold none. A placeholder
    for anything but text is left out (it stays as it is)."""
    try:
        read = json.loads(parameters, parse_constant=_refuse) if isinstance(parameters, str) else None
    except (ValueError, RecursionError):
        return {}
    if not isinstance(read, dict):
        return {}
    found = read.get("expressionAttributeNames")
    if found is None:
        spelled = (
            value for name, value in read.items() if name.isascii() and name.lower() == "expressionattributenames"
        )
        found = next(spelled, None)
    if not isinstance(found, dict):
        return {}
    return {placeholder: shown_name(name) for placeholder, name in found.items() if isinstance(name, str)}


def shown_name(name: str) -> str:
    return name if _BARE_NAME.fullmatch(name) else json.dumps(name, ensure_ascii=False)


def _refuse(constant: str) -> object:
    raise ValueError(f"{constant} is not JSON")
