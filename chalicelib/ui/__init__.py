"""The item-history page: one static HTML file (every asset inline, no build step), and the headers it is served
with, shared by the API's `/` and `deutzia ui`. Its Content-Security-Policy lets it reach nothing but the API that
served it."""

from __future__ import annotations

from functools import cache
from pathlib import Path

PAGE_HEADERS: dict[str, str | list[str]] = {
    "Content-Type": "text/html; charset=utf-8",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@cache
def page() -> bytes:
    return (Path(__file__).parent / "index.html").read_bytes()
