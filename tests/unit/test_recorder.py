"""The recorder as WSGI middleware: what it records, what it passes through untouched, and moto's crashes."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.selectors import TrailSettings
from deutzia_local import moto_state
from deutzia_local.delivery import trail_file_key
from deutzia_local.recorder import CloudTrailRecorder

AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=AKIAALICE/20240501/eu-west-1/{service}/aws4_request, "
    "SignedHeaders=host;x-amz-target, Signature=abc"
)


def _environ(service: str = "dynamodb", target: str = "DynamoDB_20120810.PutItem") -> dict[str, Any]:
    body = json.dumps({"TableName": "Music", "Item": {"id": {"S": "a"}, "v": {"S": "secret"}}}).encode()
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "HTTP_AUTHORIZATION": AUTHORIZATION.format(service=service),
        "HTTP_X_AMZ_TARGET": target,
        "HTTP_USER_AGENT": "Boto3/1.44",
        "REMOTE_ADDR": "127.0.0.1",
    }


def _app(status: str, body: bytes, content_type: str) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        assert json.loads(environ["wsgi.input"].read())["TableName"] == "Music"  # moto still reads the body
        start_response(status, [("Content-Type", content_type), ("x-amzn-RequestId", "REQ-9")])
        return [body]

    return app


@pytest.fixture
def trail(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = TrailSettings(
        "deutzia-local", "us-east-1", True, True, advanced_event_selectors=[{"FieldSelectors": []}]
    )
    monkeypatch.setattr(moto_state, "trail_settings", lambda account, name: settings)
    monkeypatch.setattr(moto_state, "key_attributes", lambda account, region, table: frozenset({"id"}))


def _call(recorder: CloudTrailRecorder, environ: dict[str, Any]) -> tuple[str, bytes]:
    seen: dict[str, str] = {}
    body = b"".join(recorder(environ, lambda status, headers: seen.update(status=status)))
    return seen["status"], body


@pytest.mark.usefixtures("trail")
def test_a_data_call_is_passed_through_and_recorded() -> None:
    events: list[dict[str, Any]] = []
    recorder = CloudTrailRecorder(_app("200 OK", b"{}", "application/x-amz-json-1.0"), events.append, "deutzia-local")
    assert _call(recorder, _environ()) == ("200 OK", b"{}")
    (event,) = events
    assert (event["eventName"], event["awsRegion"], event["requestID"]) == ("PutItem", "eu-west-1", "REQ-9")
    assert event["requestParameters"] == {"tableName": "Music", "key": {"id": "a"}, "item": ["id", "v"]}
    assert event["userIdentity"]["type"] == "Unknown"
    assert "secret" not in json.dumps(event)


@pytest.mark.usefixtures("trail")
def test_a_moto_crash_answers_as_dynamodb_and_is_recorded() -> None:
    events: list[dict[str, Any]] = []
    crash = _app("500 INTERNAL SERVER ERROR", b"<html>Traceback</html>", "text/html")
    status, body = _call(CloudTrailRecorder(crash, events.append, "deutzia-local"), _environ())
    assert status.startswith("500")
    assert json.loads(body)["__type"].endswith("#InternalServerError")
    assert (events[0]["errorCode"], events[0]["errorMessage"]) == ("InternalServerError", "Internal server error")


@pytest.mark.usefixtures("trail")
def test_an_exception_out_of_moto_answers_as_dynamodb_and_is_recorded() -> None:
    def crash(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        raise RuntimeError("dictionary changed size during iteration")

    events: list[dict[str, Any]] = []
    status, body = _call(CloudTrailRecorder(crash, events.append, "deutzia-local"), _environ())
    assert status.startswith("500")
    assert json.loads(body)["__type"].endswith("#InternalServerError")
    (event,) = events
    assert (event["eventName"], event["errorCode"]) == ("PutItem", "InternalServerError")
    assert len(event["requestID"]) == 32


@pytest.mark.usefixtures("trail")
def test_dynamodb_calls_reach_moto_one_at_a_time() -> None:
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def slow(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.01)
        with lock:
            in_flight[0] -= 1
        start_response("200 OK", [("Content-Type", "application/x-amz-json-1.0")])
        return [b"{}"]

    events: list[dict[str, Any]] = []
    recorder = CloudTrailRecorder(slow, events.append, "deutzia-local")
    targets = ["DynamoDB_20120810.PutItem", "DynamoDB_20120810.TransactWriteItems", "DynamoDB_20120810.DescribeTable"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: _call(recorder, _environ(target=targets[n % 3])), range(48)))
    assert most[0] == 1
    assert len(events) == 32


@pytest.mark.usefixtures("trail")
@pytest.mark.parametrize(
    ("service", "target"),
    [("s3", "DynamoDB_20120810.PutItem"), ("dynamodb", "DynamoDB_20120810.CreateTable"), ("kinesis", "x")],
)
def test_other_calls_are_not_recorded(service: str, target: str) -> None:
    events: list[dict[str, Any]] = []
    recorder = CloudTrailRecorder(_app("200 OK", b"{}", "application/json"), events.append, "deutzia-local")
    assert _call(recorder, _environ(service, target)) == ("200 OK", b"{}")
    assert events == []


def test_without_the_trail_nothing_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moto_state, "trail_settings", lambda account, name: None)
    events: list[dict[str, Any]] = []
    recorder = CloudTrailRecorder(_app("200 OK", b"{}", "application/json"), events.append, "deutzia-local")
    _call(recorder, _environ())
    assert events == []


def test_trail_files_are_named_like_cloudtrails() -> None:
    from datetime import UTC, datetime

    key = trail_file_key("123456789012", "eu-west-1", datetime(2024, 5, 1, 23, 59, tzinfo=UTC))
    prefix = "AWSLogs/123456789012/CloudTrail/eu-west-1/2024/05/01/123456789012_CloudTrail_eu-west-1_20240501T2359Z_"
    assert key.startswith(prefix)
    assert len(key) == len(prefix) + 16 + len(".json.gz")


class _FlakyDestination:
    """Stands in for the logs and S3 clients; the first call of each kind fails, as an unreachable endpoint does."""

    class exceptions:  # noqa: N801 - boto3's attribute name
        ResourceAlreadyExistsException = KeyError

    def __init__(self) -> None:
        self.failed: set[str] = set()
        self.log_events: list[dict[str, Any]] = []
        self.files: list[bytes] = []

    def _fail_once(self, kind: str) -> None:
        if kind not in self.failed:
            self.failed.add(kind)
            raise ConnectionError(kind)

    def create_log_stream(self, **_: Any) -> None:
        pass

    def put_log_events(self, logEvents: list[dict[str, Any]], **_: Any) -> None:  # noqa: N803 - boto3's name
        self._fail_once("logs")
        self.log_events += logEvents

    def put_object(self, Body: bytes, **_: Any) -> None:  # noqa: N803 - boto3's name
        self._fail_once("s3")
        self.files.append(Body)


def test_a_failed_delivery_is_retried_and_loses_nothing() -> None:
    import gzip

    from deutzia_local.delivery import TrailDelivery

    destination = _FlakyDestination()
    delivery = TrailDelivery(destination, destination, "/g", "trail", logs_interval=0.01, files_interval=0.01)
    delivery.start()
    for n in range(3):
        delivery.submit({"eventID": f"e{n}", "recipientAccountId": "123456789012", "awsRegion": "us-east-1"})
    delivery.stop()
    assert destination.failed == {"logs", "s3"}
    assert [json.loads(e["message"])["eventID"] for e in destination.log_events] == ["e0", "e1", "e2"]
    records = [r["eventID"] for body in destination.files for r in json.loads(gzip.decompress(body))["Records"]]
    assert records == ["e0", "e1", "e2"]


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_events_over_256_kb_and_dropped_deliveries_reach_only_the_trail_files(rate: float) -> None:
    import gzip

    from deutzia_local.delivery import MAX_LOG_EVENT_BYTES, TrailDelivery

    destination = _FlakyDestination()
    destination.failed = {"logs", "s3"}  # no failures here
    delivery = TrailDelivery(
        destination, destination, "/g", "trail", logs_interval=0.01, files_interval=0.01, log_drop_rate=rate
    )
    delivery.start()
    origin = {"recipientAccountId": "123456789012", "awsRegion": "us-east-1"}
    delivery.submit({"eventID": "small", **origin})
    delivery.submit({"eventID": "large", "requestParameters": "x" * MAX_LOG_EVENT_BYTES, **origin})
    delivery.stop()
    logged = [json.loads(e["message"])["eventID"] for e in destination.log_events]
    assert logged == ([] if rate else ["small"])
    assert delivery.dropped_from_logs == (2 if rate else 1)
    records = [r["eventID"] for body in destination.files for r in json.loads(gzip.decompress(body))["Records"]]
    assert records == ["small", "large"]
