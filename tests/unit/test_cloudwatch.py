"""CloudWatch Logs payloads on Kinesis: decoded when they are one, refused with a reason when they are not."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

import pytest

from chalicelib.cloudwatch import CONTROL_MESSAGE, DATA_MESSAGE, decode_logs_payload
from chalicelib.errors import UndecodableRecordError
from tests.factories import logs_payload


def test_control_message_fixture_decodes_as_control(shared_fixtures: Path) -> None:
    data = base64.b64decode((shared_fixtures / "kinesis" / "clever-cwl-kinesis-control-message.b64").read_text())
    payload = decode_logs_payload(data)
    assert payload.message_type == CONTROL_MESSAGE
    assert payload.log_events[0].message.startswith("CWL CONTROL MESSAGE")


def test_powertools_fixture_decodes_to_lambda_log_lines(shared_fixtures: Path) -> None:
    event = json.loads((shared_fixtures / "kinesis" / "powertools-kinesisStreamCloudWatchLogsEvent.json").read_text())
    payloads = [decode_logs_payload(base64.b64decode(r["kinesis"]["data"])) for r in event["Records"]]
    assert [p.message_type for p in payloads] == [DATA_MESSAGE, DATA_MESSAGE]
    assert all(p.log_events for p in payloads)
    messages = [e.message for p in payloads for e in p.log_events]
    assert any(m.startswith(("START", "END", "REPORT")) for m in messages)


def test_data_message_keeps_event_ids_and_messages() -> None:
    payload = decode_logs_payload(logs_payload(["first", "second"]))
    assert [(e.id, e.message) for e in payload.log_events] == [("0", "first"), ("1", "second")]
    assert payload.log_group == "/deutzia/cloudtrail"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00\xffgarbage bytes", "not gzip data"),
        (logs_payload(["x"])[:20], "truncated gzip"),
        (gzip.compress(b"not json at all"), "not JSON"),
        (gzip.compress("\udcff".encode("utf-8", "surrogatepass")), "not JSON"),
        (gzip.compress(b"[1, 2, 3]"), "JSON is not an object"),
        (gzip.compress(b'{"messageType": "OTHER", "logEvents": []}'), "messageType"),
        (gzip.compress(b'{"messageType": "DATA_MESSAGE", "logEvents": {}}'), "logEvents is not a list"),
        (gzip.compress(b'{"messageType": "DATA_MESSAGE", "logEvents": [{"id": "1"}]}'), "has no message"),
        (b"", "empty record data"),
    ],
)
def test_undecodable_data_is_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(UndecodableRecordError, match=reason):
        decode_logs_payload(data)
