"""Plays CloudTrail in front of moto: a WSGI middleware that turns every DynamoDB data-plane call into an event.

It sees each HTTP attempt whole (request and response), so SDK retries are separate events as in AWS. A call is
recorded when its SigV4 scope names `dynamodb` and its `X-Amz-Target` is a data-plane operation, and only when the
local trail's selectors log it. moto's crashes (an HTML 500, or an exception out of moto) are answered as
DynamoDB's InternalServerError, and audited. DynamoDB calls reach moto one at a time: its DynamoDB backend is not
thread-safe (concurrent TransactWriteItems fail with "dictionary changed size during iteration"). Recording never
fails the caller's request; a failure to record is logged loudly.
"""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from chalicelib.selectors import trail_logs
from deutzia_local import moto_state
from deutzia_local.trail_events import DynamoDBCall, build_cloudtrail_event, error_of, is_data_operation

logger = logging.getLogger("deutzia.recorder")

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
_INTERNAL_ERROR = {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "Internal server error"}

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
EventSink = Callable[[dict[str, Any]], None]


class CloudTrailRecorder:
    """WSGI middleware: passes every request to moto, and hands the audited ones' events to `sink`."""

    def __init__(self, app: WSGIApp, sink: EventSink, trail_name: str) -> None:
        self._app = app
        self._sink = sink
        self._trail_name = trail_name
        self._dynamodb = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        scope = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
        operation = (
            is_data_operation(environ.get("HTTP_X_AMZ_TARGET")) if scope and scope.group(3) == "dynamodb" else None
        )
        if scope is None or scope.group(3) != "dynamodb":
            return self._app(environ, start_response)
        if operation is None:  # control-plane calls share moto's DynamoDB state: one at a time too
            with self._dynamodb:
                return list(self._app(environ, start_response))
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            body = environ["wsgi.input"].read(length)
        else:  # a chunked request: werkzeug marks its input as ending by itself
            body = environ["wsgi.input"].read() if environ.get("wsgi.input_terminated") else b""
        environ["wsgi.input"] = io.BytesIO(body)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured.update(status=status, headers=headers)
            return lambda data: None

        try:
            with self._dynamodb:
                response = self._app(environ, capture)
                try:
                    response_body = b"".join(response)
                finally:
                    close = getattr(response, "close", None)
                    if close is not None:
                        close()
            status, headers = str(captured["status"]), list(captured["headers"])
        except Exception:
            logger.exception("moto failed on %s; answered and audited as InternalServerError", operation)
            status, headers, response_body = "500 Internal Server Error", [], b""
        code = int(status.split()[0])
        if code >= 500 and not response_body.lstrip().startswith(b"{"):
            response_body = json.dumps(_INTERNAL_ERROR).encode()
            status = "500 Internal Server Error"
            headers = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")]
            headers += [("Content-Type", "application/x-amz-json-1.0"), ("Content-Length", str(len(response_body)))]
            if not any(k.lower() == "x-amzn-requestid" for k, _ in headers):  # as DynamoDB's own errors carry one
                headers.append(("x-amzn-RequestId", uuid.uuid4().hex.upper()))
        for attempt in range(3):
            try:
                self._record(operation, scope.group(1), scope.group(2), environ, body, code, response_body, headers)
                break
            except RuntimeError:  # moto's state changed under our read (a dict resized by another request): retry
                if attempt == 2:
                    logger.exception("could not record %s: this call is missing from the audit trail", operation)
            except Exception:
                logger.exception("could not record %s: this call is missing from the audit trail", operation)
                break
        start_response(status, headers)
        return [response_body]

    def _record(
        self,
        operation: str,
        access_key_id: str,
        region: str,
        environ: dict[str, Any],
        body: bytes,
        status: int,
        response_body: bytes,
        headers: list[tuple[str, str]],
    ) -> None:
        account_id = moto_state.account_of(access_key_id)
        trail = moto_state.trail_settings(account_id, self._trail_name)
        if trail is None:
            return
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            request = {}
        error_code, error_message = error_of(status, response_body)
        request_id = next((v for k, v in headers if k.lower() == "x-amzn-requestid"), "")
        call = DynamoDBCall(
            operation=operation,
            request=request if isinstance(request, dict) else {},
            region=region,
            account_id=account_id,
            user_identity=moto_state.user_identity(access_key_id, account_id),
            source_ip=str(environ.get("REMOTE_ADDR", "")),
            user_agent=str(environ.get("HTTP_USER_AGENT", "")),
            request_id=request_id,
            error_code=error_code,
            error_message=error_message,
        )
        event = build_cloudtrail_event(call, lambda table: moto_state.key_attributes(account_id, region, table))
        if trail_logs(trail, event):
            self._sink(event)
