"""The item-history page: one static HTML file (every asset inline, no build step), and the headers it is served
with, shared by the API's `/` and `deutzia ui`. Its Content-Security-Policy runs only the page's own script and
style (by their hashes, so text injected into the page would run nothing) and lets it reach nothing but the API
that served it."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

_INLINE = re.compile(rb"<(script|style)>(.*?)</\1>", re.DOTALL)


@cache
def page() -> bytes:
    return (Path(__file__).parent / "index.html").read_bytes()


@cache
def page_headers() -> dict[str, str]:
    """The headers the page is served with: its CSP names the hash of each inline script and style."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for kind, body in _INLINE.findall(page()):
        hashes[kind].append("'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + "'")
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {' '.join(hashes[b'script'])}; style-src {' '.join(hashes[b'style'])}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "no-cache",
    }
