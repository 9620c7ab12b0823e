"""Plays an S3 outage on the local endpoint, on purpose, so the stack's failure paths can be exercised end to end:
while a fault is on, every write to the named bucket is refused the way S3 refuses it (403 AccessDenied or 503
SlowDown, S3's XML error body); reads and every other bucket still work.

Driven over HTTP on the same endpoint: `POST /_deutzia/faults/s3` with `{"bucket": ..., "seconds": ..., "code": ...}`
starts one, `DELETE` ends it. Local stack only; nothing in AWS has this door.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

FAULTS_PATH = "/_deutzia/faults/s3"
_CODES = {
    "AccessDenied": ("403 Forbidden", "Access Denied"),
    "SlowDown": ("503 Slow Down", "Please reduce your request rate."),
}
_MAX_SECONDS = 3600.0
_MAX_BODY = 4096

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class S3FaultInjector:
    """WSGI middleware: refuses writes to one bucket until a deadline, and serves the door that sets it."""

    def __init__(self, app: WSGIApp, clock: Callable[[], float] = time.monotonic) -> None:
        self._app = app
        self._clock = clock
        self._lock = threading.Lock()
        self._bucket: str | None = None
        self._until = 0.0
        self._code = "AccessDenied"

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO", ""))
        if path == FAULTS_PATH:
            return self._control(environ, start_response)
        if self._refuses(environ, path):
            status, message = _CODES[self._code]
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{self._code}</Code>'
                f"<Message>{message}</Message></Error>"
            ).encode()
            start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body]
        return self._app(environ, start_response)

    def _refuses(self, environ: dict[str, Any], path: str) -> bool:
        with self._lock:
            if self._bucket is None or self._clock() >= self._until:
                return False
            bucket = self._bucket
        scope = str(environ.get("HTTP_AUTHORIZATION", ""))
        writes = environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE")
        return writes and "/s3/aws4_request" in scope and path.startswith(f"/{bucket}/")

    def _control(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "DELETE":
            with self._lock:
                self._bucket = None
            return _answer(start_response, "200 OK", {"fault": None})
        if method != "POST":
            return _answer(start_response, "405 Method Not Allowed", {"error": "POST or DELETE"})
        try:
            length = min(int(environ.get("CONTENT_LENGTH") or 0), _MAX_BODY)
            request = json.loads(environ["wsgi.input"].read(length) or b"{}")
            bucket, seconds = str(request["bucket"]), float(request["seconds"])
            code = str(request.get("code", "AccessDenied"))
            if code not in _CODES or not 0 < seconds <= _MAX_SECONDS or not bucket:
                raise ValueError(code)
        except (ValueError, KeyError, TypeError):
            message = f"send {{'bucket': ..., 'seconds': 0 to {_MAX_SECONDS:g}, 'code': one of {sorted(_CODES)}}}"
            return _answer(start_response, "400 Bad Request", {"error": message})
        with self._lock:
            self._bucket, self._until, self._code = bucket, self._clock() + seconds, code
        return _answer(start_response, "200 OK", {"fault": {"bucket": bucket, "seconds": seconds, "code": code}})


def _answer(start_response: Callable[..., Any], status: str, document: dict[str, Any]) -> list[bytes]:
    body = json.dumps(document).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
