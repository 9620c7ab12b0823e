"""`deutzia ui`: the item-history page on 127.0.0.1, like `kubectl proxy`: it serves the page itself and forwards the
page's three calls (`/tables`, `/audit`, `/audit/coverage`), signed with the user's own credentials, to the target
API, which keeps its IAM auth and gains no new door. Nothing else is forwarded; it listens on loopback only.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chalicelib.ui import page, page_headers
from deutzia_cli.api import CliError, Target

FORWARDED = ("/tables", "/audit", "/audit/coverage")


def serve(target: Target, port: int = 0) -> ThreadingHTTPServer:
    """The proxy on 127.0.0.1:`port` (0: any free port), serving on a thread of its own until shut down."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._answer(200, page(), page_headers())
            elif path in FORWARDED:
                try:
                    status, body = target.forward(self.path)
                except CliError as exc:
                    status, body = 502, f'{{"Code": "BadGateway", "Message": "{exc}"}}'.encode()
                self._answer(status, body, {"Content-Type": "application/json"})
            else:
                self._answer(404, b'{"Code": "NotFound", "Message": "not served by deutzia ui"}', {})

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            """Requests are not logged one by one."""

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="deutzia-ui", daemon=True).start()
    return server
