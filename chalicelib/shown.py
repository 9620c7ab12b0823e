"""How stored values are shown to people on a terminal: as text that cannot act. A caller chooses its own user
agent and an item its own key, so a value may hold escape sequences (which move the cursor, erase lines, retitle the
window), bidi overrides (which reorder what is read) or zero-width characters; each is written as `\\uXXXX`. The
page (chalicelib/ui/index.html) does the same with the same characters. Pure.
"""

from __future__ import annotations

import re

# C0 and C1 controls (ESC among them), DEL, soft hyphen, bidi marks, overrides and isolates, zero widths, BOM.
_HIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\xad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff]")


def visible_text(value: object) -> str:
    """`str(value)` with every character that would act on a terminal, or hide or reorder text, as `\\uXXXX`."""
    return _HIDDEN.sub(lambda found: f"\\u{ord(found.group()):04x}", str(value))
