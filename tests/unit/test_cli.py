"""The `deutzia` command's own parts: SigV4 signing checked against botocore's signature and AWS's published test
vector at a fixed clock, and every refusal of the API mapped to one line and its exit code (a loopback server plays
the API)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import threading
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from click.testing import CliRunner

from chalicelib.schema import COLUMN_NAMES
from deutzia_cli.api import CliError, Target, sign
from deutzia_cli.main import COVERAGE_LABELS, CSV_COLUMNS, cli, coverage_days, coverage_line, main
from tests.factories import INCOMPLETE_COVERAGE, TABLE_NOTES

CLOCK = datetime(2015, 8, 30, 12, 36, 0, tzinfo=UTC)
EXAMPLE = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: CLOCK.replace(tzinfo=None))


@pytest.mark.usefixtures("fixed_clock")
def test_a_request_is_signed_as_botocore_signs_it_for_execute_api() -> None:
    url = "https://abc123.execute-api.eu-west-1.amazonaws.com/api/audit?table=Music&key=%7B%22id%22%3A%20%22a%20b%22%7D"
    headers = sign("GET", url, EXAMPLE, "eu-west-1", {"Accept": "application/json"})
    expected = AWSRequest(method="GET", url=url, headers={"Accept": "application/json"})
    SigV4Auth(EXAMPLE, "execute-api", "eu-west-1").add_auth(expected)
    assert headers["Authorization"] == expected.headers["Authorization"]
    assert headers["X-Amz-Date"] == "20150830T123600Z"
    assert "/20150830/eu-west-1/execute-api/aws4_request" in headers["Authorization"]


@pytest.mark.usefixtures("fixed_clock")
def test_botocores_signer_gives_awss_published_signature() -> None:
    """AWS's SigV4 test suite, `get-vanilla`: the signer the command uses is the one AWS documents."""
    request = AWSRequest(method="GET", url="https://example.amazonaws.com/")
    SigV4Auth(EXAMPLE, "service", "us-east-1").add_auth(request)
    assert request.headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    )


class _Answers(BaseHTTPRequestHandler):
    status = 200
    body: ClassVar[Any] = None
    coverage: ClassVar[Any] = None  # GET /audit/coverage's answer, when a test gives one
    heard: ClassVar[list[tuple[str, str | None]]] = []
    # Each route's answer from its path and query, when a test gives one: (status, body).
    routes: ClassVar[Callable[[str, dict[str, list[str]]], tuple[int, Any]] | None] = None

    def do_GET(self) -> None:
        type(self).heard.append((self.path, self.headers.get("Authorization")))
        covered = self.coverage is not None and self.path.split("?")[0].endswith("/audit/coverage")
        status, body = (200, self.coverage) if covered else (self.status, self.body)
        if type(self).routes is not None and not covered:
            parsed = urllib.parse.urlparse(self.path)
            status, body = type(self).routes(parsed.path, urllib.parse.parse_qs(parsed.query))  # type: ignore[misc]
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    _Answers.coverage = _Answers.routes = None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("status", "body", "code", "says"),
    [
        (400, {"Code": "BadRequestError", "Message": "key: must be a JSON object"}, 2, "bad request: key: must be"),
        (403, {"message": "Forbidden"}, 3, "execute-api:Invoke on arn:aws:execute-api:*:*:127/*/GET/audit"),
        (404, {"Code": "NotFoundError", "Message": "table Payroll is not audited here"}, 4, "Payroll is not audited"),
        (502, {"Code": "BadGatewayError", "Message": "Athena query q-1 failed"}, 5, "answered 502: Athena query"),
        (504, "not json", 5, "answered 504: no reason given"),
    ],
)
def test_each_refusal_is_one_line_and_its_exit_code(
    api: str, status: int, body: Any, code: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _Answers.status, _Answers.body = status, body
    assert _exit_code(["history", "--table", "Payroll", "--endpoint", api]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error: ")]) == 1
    assert says in err[-1]


def test_a_request_refused_for_the_apis_rate_is_sent_again_after_a_while_then_named(
    api: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deutzia_cli.api

    waited: list[float] = []
    monkeypatch.setattr(deutzia_cli.api.time, "sleep", waited.append)
    _Answers.status, _Answers.body, _Answers.heard = 429, {"message": "Too Many Requests"}, []
    with pytest.raises(CliError, match=r"beyond its rate \(the stack's ApiRequestsPerSecond\)") as refused:
        Target(api).get("/audit", {"table": "Music"})
    assert (refused.value.code, waited, len(_Answers.heard)) == (5, [1.0, 2.0, 4.0, 8.0], 5)
    answers = iter([(429, b"{}"), (429, b"{}"), (200, b'{"entries": []}')])
    waited.clear()
    monkeypatch.setattr(Target, "forward", lambda self, path: next(answers))
    assert Target(api).get("/audit", {"table": "Music"}) == {"entries": []}  # the third try is answered
    assert waited == [1.0, 2.0]


def test_the_arn_a_403_names_is_the_apis_own() -> None:
    target = Target("https://abc123.execute-api.eu-west-1.amazonaws.com/api", "eu-west-1", EXAMPLE, "111122223333")
    assert target.invoke_arn("/audit") == "arn:aws:execute-api:eu-west-1:111122223333:abc123/api/GET/audit"


@pytest.mark.parametrize(
    ("arguments", "code", "says"),
    [
        (["history", "--table", "T1x", "--endpoint", "ftp://x"], 2, "must be an http(s) URL"),
        (["history", "--table", "T1x", "--endpoint", "http://127.0.0.1:9", "--stack", "s"], 2, "not both"),
        (["history", "--table", "T1x", "--endpoint", "http://127.0.0.1:9"], 5, "cannot reach http://127.0.0.1:9"),
        (["history"], 2, "Missing option '--table'"),
        (["history", "--table", "T1x", "--limit", "0"], 2, "--limit"),
        # A bad filter is named before any API is looked for (this one cannot be reached), as GET /audit names it.
        (["history", "--table", "T1x", "--key", "42", "--endpoint", "http://127.0.0.1:9"], 2, "--key: must be a JSON"),
        (["history", "--table", "T", "--endpoint", "http://127.0.0.1:9"], 2, "--table: is not a DynamoDB table name"),
        (["history", "--table", "T1x", "--since", "2026-02-30", "--endpoint", "http://127.0.0.1:9"], 2, "--since: "),
        (["history", "--table", "T1x", "--since", "2026-02-02", "--until", "2026-02-01"], 2, "--until: must be later"),
        (["history", "--table", "T1x", "--operation", "Drop", "--stack", "s"], 2, "--operation: must be one of"),
        (["evidence", "--table", "T1x", "--key", "[1]", "--out", "x.zip", "--stack", "s"], 2, "--key: must be a JSON"),
    ],
)
def test_bad_options_and_unreachable_apis_say_so(
    arguments: list[str], code: int, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit_code(arguments) == code
    assert says in capsys.readouterr().err


def test_no_credentials_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    endpoint = "https://abc123.execute-api.eu-west-1.amazonaws.com/api"
    assert _exit_code(["history", "--table", "Music", "--endpoint", endpoint]) == 3
    assert "no AWS credentials found: run `aws configure`" in capsys.readouterr().err


def test_no_local_stack_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEUTZIA_API_PORT", "9")
    result = CliRunner().invoke(cli, ["history", "--table", "Music"])
    assert "start it with `make up`" in str(result.exception)


def _exit_code(arguments: list[str]) -> int:
    """`deutzia <arguments>` as the console script runs it: its exit code (0 when it returns)."""
    import sys

    saved = sys.argv
    sys.argv = ["deutzia", *arguments]
    try:
        main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        sys.argv = saved
    return 0


def _athena() -> tuple[Any, Any]:
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("athena", region_name="us-east-1")
    return client, Stubber(client)


def test_sql_on_athena_polls_reads_every_page_and_reports_the_bytes_scanned() -> None:
    from deutzia_cli.sql import athena_sql

    client, stubber = _athena()
    start = {"QueryString": "select 1", "WorkGroup": "wg", "QueryExecutionContext": {"Database": "deutzia"}}
    stubber.add_response("start_query_execution", {"QueryExecutionId": "q-1"}, start)
    for state in ("RUNNING", "SUCCEEDED"):
        execution = {"QueryExecutionId": "q-1", "Status": {"State": state}, "Statistics": {"DataScannedInBytes": 42}}
        stubber.add_response("get_query_execution", {"QueryExecution": execution}, {"QueryExecutionId": "q-1"})
    metadata = {"ColumnInfo": [{"Name": "n", "Type": "bigint"}, {"Name": "who", "Type": "varchar"}]}
    header = {"Data": [{"VarCharValue": "n"}, {"VarCharValue": "who"}]}
    first = {"ResultSet": {"Rows": [header, {"Data": [{"VarCharValue": "1"}, {}]}], "ResultSetMetadata": metadata}}
    stubber.add_response("get_query_results", {**first, "NextToken": "t"}, {"QueryExecutionId": "q-1"})
    second = {"ResultSet": {"Rows": [{"Data": [{"VarCharValue": "2"}, {"VarCharValue": "bob"}]}]}}
    stubber.add_response("get_query_results", second, {"QueryExecutionId": "q-1", "NextToken": "t"})
    heard: list[str] = []
    with stubber:
        answer = athena_sql(client, "wg", "deutzia", "select 1", heard.append)
    assert (answer.columns, answer.rows, answer.scanned_bytes) == (["n", "who"], [["1", None], ["2", "bob"]], 42)
    assert heard[-1] == "Athena query q-1: succeeded, 42 bytes scanned"


def test_a_failed_athena_query_says_why_in_one_line() -> None:
    from deutzia_cli.api import CliError
    from deutzia_cli.sql import athena_sql

    client, stubber = _athena()
    stubber.add_response("start_query_execution", {"QueryExecutionId": "q-2"})
    status = {"State": "FAILED", "StateChangeReason": "line 1:8: Column 'nope' cannot be resolved"}
    stubber.add_response("get_query_execution", {"QueryExecution": {"QueryExecutionId": "q-2", "Status": status}})
    with stubber, pytest.raises(CliError, match="q-2 failed: line 1:8: Column 'nope'") as failure:
        athena_sql(client, "wg", "deutzia", "select nope", lambda _: None)
    assert failure.value.code == 2


def test_csv_cells_a_spreadsheet_would_run_as_formulas_start_with_a_quote(
    api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = {
        "event_time": "2024-05-01T12:00:00Z",
        "principal_arn": "arn:aws:iam::123456789012:user/mallory",
        "operation": "Put",
        "item_key": '{"id":"=1+1"}',
        "success": False,
        "error_message": "-2+3",
        "user_agent": '=HYPERLINK("https://example.com/?"&A1,"open")',
        "source_ip": "@SUM(1)",
        "item_index": 0,
        "attribute_names": ["id", "=cmd", "é"],
        "read_only": True,
        "table_name": "Music",
    }
    _Answers.status, _Answers.body = 200, {"entries": [entry], "next_token": None}
    assert _exit_code(["history", "--table", "Music", "--endpoint", api, "--format", "csv"]) == 0
    (row,) = csv.DictReader(io.StringIO(capsys.readouterr().out))
    assert row["user_agent"] == '\'=HYPERLINK("https://example.com/?"&A1,"open")'
    assert (row["error_message"], row["source_ip"]) == ("'-2+3", "'@SUM(1)")
    assert (row["item_key"], row["principal_arn"]) == ('{"id":"=1+1"}', entry["principal_arn"])
    assert (row["success"], row["read_only"], row["item_index"], row["error_code"]) == ("false", "true", "0", "")
    assert (row["attribute_names"], row["table_name"]) == ('["id","=cmd","é"]', "Music")


def test_csv_has_every_column_of_the_record_and_the_page_writes_the_same() -> None:
    assert set(CSV_COLUMNS) == {*COLUMN_NAMES, "table_name"}
    assert len(CSV_COLUMNS) == len(set(CSV_COLUMNS))
    page = (Path(__file__).parents[2] / "chalicelib" / "ui" / "index.html").read_text(encoding="utf-8")
    listed = re.search(r"const CSV_COLUMNS = \[(.*?)\];", page, re.DOTALL)
    assert listed is not None
    assert tuple(re.findall(r'"([a-z_]+)"', listed.group(1))) == CSV_COLUMNS


def test_the_table_shows_escape_sequences_and_bidi_overrides_instead_of_obeying_them(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # one line per entry
    entry = {
        "event_time": "2024-05-01T12:00:00Z",
        "principal_name": "mallory\x1b[1A\x1b[2K",  # cursor up, erase the line: an entry hiding the one above
        "operation": "Put",
        "event_name": "PutItem",
        "item_key": '{"id":"invoice\u202egpj.exe"}',
        "success": False,
        "error_code": "[bold]X\x07",
        "source_ip": "\x1b]0;title\x07",
    }
    _Answers.status, _Answers.body = 200, {"entries": [entry], "next_token": None}
    assert _exit_code(["history", "--table", "Music", "--endpoint", api]) == 0
    shown = capsys.readouterr().out
    assert not any(character in shown for character in "\x1b\x07\u202e")
    assert "mallory\\u001b[1A\\u001b[2K" in shown
    assert '{"id":"invoice\\u202egpj.exe"}' in shown
    assert "failed: [bold]X\\u0007" in shown
    assert "\\u001b]0;title\\u0007" in shown


def test_one_items_history_names_its_key_once_and_a_tables_calls_each_theirs(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "400")
    entry = {"event_time": "2024-05-01T12:00:00Z", "principal_name": "alice", "operation": "Put", "success": True,
             "event_name": "PutItem", "item_key": '{"id":"k-42"}', "source_ip": "192.0.2.1",
             "attribute_names": ["id", "Rating"]}  # fmt: skip
    _Answers.status, _Answers.body = 200, {"entries": [entry, entry], "next_token": None}
    for arguments, header, keys in (
        (["--key", '{"id": "k-42"}'], ["time", "who", "operation", "attributes", "result", "from"], 1),  # the title
        ([], ["time", "who", "operation", "key", "attributes", "result", "from"], 2),
    ):
        _exit_code(["history", "--table", "Music", "--endpoint", api, *arguments])
        shown = capsys.readouterr().out
        (heading,) = [line for line in shown.splitlines() if "operation" in line]
        assert re.findall(r"[a-z]+", heading) == header
        assert shown.count("k-42") == keys
        assert shown.count("id, Rating") == 2  # what each call named of the item


@pytest.mark.usefixtures("fixed_clock")
def test_the_ui_proxy_serves_the_page_and_forwards_only_the_pages_calls_signed(api: str) -> None:
    import urllib.error
    import urllib.request

    from deutzia_cli.ui import serve

    _Answers.status, _Answers.body, _Answers.heard = 200, {"tables": ["Music"]}, []
    proxy = serve(Target(api, "eu-west-1", EXAMPLE), 0)
    local = f"http://127.0.0.1:{proxy.server_port}"
    try:
        with urllib.request.urlopen(f"{local}/") as answer:
            assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
            assert b"<title>Deutzia: item history</title>" in answer.read()
        with urllib.request.urlopen(f"{local}/tables") as answer:
            assert json.loads(answer.read()) == {"tables": ["Music"]}
        _Answers.status, _Answers.body = 404, {"Code": "NotFoundError", "Message": "table X is not audited here"}
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{local}/audit?table=X&key=%7B%7D")
        refused.value.close()
        assert refused.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as elsewhere:
            urllib.request.urlopen(f"{local}/secrets")
        elsewhere.value.close()
        assert elsewhere.value.code == 404
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert [path for path, _ in _Answers.heard] == ["/tables", "/audit?table=X&key=%7B%7D"]
    assert all(
        signature and "/20150830/eu-west-1/execute-api/aws4_request" in signature for _, signature in _Answers.heard
    )


def test_a_stack_name_finds_the_api_in_its_outputs_and_the_requests_are_signed(
    api: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    template = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"EndpointURL": {"Value": f"{api}/api/"}, "AthenaWorkGroupName": {"Value": "wg"}},
    }
    boto3.client("cloudformation").create_stack(StackName="deutzia-cli", TemplateBody=json.dumps(template))
    _Answers.status, _Answers.body, _Answers.heard = (
        200,
        {"table": "Music", "key": None, "entries": [], "next_token": None},
        [],
    )
    assert _exit_code(["history", "--table", "Music", "--stack", "deutzia-cli", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    ((path, signature),) = _Answers.heard
    week = (datetime.now(UTC).date() - timedelta(days=6)).isoformat()  # a table's calls: its last 7 days
    assert path == f"/api/audit?table=Music&since={week}&limit=50"
    assert signature is not None
    assert "/us-east-1/execute-api/aws4_request" in signature
    assert _exit_code(["history", "--table", "Music", "--stack", "no-such-stack"]) == 4


def test_a_tables_calls_are_its_last_seven_days_unless_since_says_otherwise(
    api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _Answers.status, _Answers.body, _Answers.heard = 200, {"entries": [], "next_token": None}, []
    for arguments in (["--until", "2026-11-20"], ["--until", "2026-11-20T10:00:00Z"], ["--since", "2020-01-01"], []):
        assert _exit_code(["history", "--table", "Music", "--endpoint", api, "--format", "json", *arguments]) == 0
    week = (datetime.now(UTC).date() - timedelta(days=6)).isoformat()
    asked = [urllib.parse.parse_qs(urllib.parse.urlparse(path).query) for path, _ in _Answers.heard]
    assert [query.get("since") for query in asked] == [["2026-11-13"], ["2026-11-13"], ["2020-01-01"], [week]]
    assert "the table's calls since 2026-11-13 (--since for earlier ones)" in capsys.readouterr().err
    _exit_code(["history", "--table", "Music", "--key", '{"id": "1"}', "--endpoint", api, "--format", "json"])
    assert "since" not in urllib.parse.parse_qs(urllib.parse.urlparse(_Answers.heard[-1][0]).query)  # an item's all


def test_the_coverage_of_a_history_is_the_days_it_covers_at_most_366() -> None:
    today = date(2026, 11, 29)
    assert coverage_days(None, None, today) == ({}, False)  # the API's 30 days up to today
    assert coverage_days("2026-11-01", None, today) == ({"since": "2026-11-01"}, False)
    assert coverage_days(None, "2026-11-20T10:00:00Z", today) == ({"until": "2026-11-21"}, False)
    assert coverage_days("2020-01-01", "2026-11-20", today) == ({"until": "2026-11-21", "since": "2025-11-20"}, True)
    assert coverage_days("not a day", "2026-13-40", today) == ({}, False)  # GET /audit says what is wrong with them


def test_the_coverage_line_counts_each_status_and_names_the_days_with_calls_missing_or_not_in_the_trail() -> None:
    line, missing = coverage_line(INCOMPLETE_COVERAGE, True)
    assert line == (
        "Checked against CloudTrail's own files, 2026-11-24 to 2026-11-27 (the range's last 366 days): "
        "2 days incomplete, 1 day with records the trail does not confirm, 1 day not checked yet. Calls still missing "
        "on 2026-11-25 (the trail did not log from 2026-11-25T01:00:00Z to 2026-11-25T04:00:00Z), 2026-11-26 (3 "
        "missing, 2 to be backfilled by the next daily runs). Records CloudTrail's own files lack or contradict on "
        "2026-11-24 (2). Records deleted after a check, written again from the trail's files, on 2026-11-24 (2). "
        "Records that contradicted the trail's files, replaced by the files' own, on 2026-11-24 (1). "
        "The trail: the trail is not logging since 2026-11-28T09:00:00Z: no call is recorded, neither in GET /audit "
        "nor in the trail's files, until it is started again."
    )
    assert missing
    days = [{"day": f"2026-11-{d}", "status": "verified"} for d in (25, 26)]
    verified = {**INCOMPLETE_COVERAGE, "days": days, "trail_problems": []}
    assert coverage_line(verified, False) == (
        "Checked against CloudTrail's own files, 2026-11-24 to 2026-11-27: 2 days verified complete.",
        False,
    )
    stopped = {**verified, "trail_problems": INCOMPLETE_COVERAGE["trail_problems"]}  # verified days, a stopped trail
    assert coverage_line(stopped, False)[1]
    unconfirmed = {**INCOMPLETE_COVERAGE, "days": INCOMPLETE_COVERAGE["days"][:1], "trail_problems": []}
    assert coverage_line(unconfirmed, False) == (
        "Checked against CloudTrail's own files, 2026-11-24 to 2026-11-27: 1 day with records the trail does not "
        "confirm. Records CloudTrail's own files lack or contradict on 2026-11-24 (2). Records deleted after a check, "
        "written again from the trail's files, on 2026-11-24 (2). Records that contradicted the trail's files, "
        "replaced by the files' own, on 2026-11-24 (1).",
        True,
    )
    # A later check: the trail's records replaced the contradicting ones, and the day is complete, as it says.
    repaired = {**verified, "days": [{"day": "2026-11-24", "status": "backfilled", "altered": 0, "restored": 4}]}
    assert coverage_line(repaired, False) == (
        "Checked against CloudTrail's own files, 2026-11-24 to 2026-11-27: 1 day complete after backfill. Records "
        "that contradicted the trail's files, replaced by the files' own, on 2026-11-24 (4).",
        True,
    )


def test_the_coverage_line_ends_with_what_dynamodb_says_of_the_table_and_when_it_was_created_where_it_splits() -> None:
    verified = {**INCOMPLETE_COVERAGE, "days": [{"day": "2026-11-25", "status": "verified"}], "trail_problems": []}
    expiry, created = (f" The table: {note['text']}." for note in TABLE_NOTES)
    noted = {**verified, "table_notes": TABLE_NOTES}
    first = "Checked against CloudTrail's own files, 2026-11-24 to 2026-11-27: 1 day verified complete."
    # No entry shown: said only after a day the trail holds calls of, which are then of an earlier table.
    assert coverage_line(noted, False) == (first + expiry, False)  # no day with calls: nothing to split
    for calls_on, split in (("2026-11-24", True), ("2026-11-25", False), ("2026-11-26", False)):
        days = [{"day": calls_on, "status": "verified", "trail_events": 3}, {"day": "2026-11-27", "status": "verified"}]
        line = coverage_line({**noted, "days": days}, False)[0]
        assert line.endswith(expiry + created if split else expiry), calls_on
    # An entry shown from before the table was created: it is of an earlier table. None: nothing to split.
    assert coverage_line(noted, False, "2026-11-25T11:59:59Z")[0] == first + expiry + created
    assert coverage_line(noted, False, "2026-11-25T12:00:00Z")[0] == first + expiry
    # What an endpoint says beyond the notes' shape, or beyond three of them, is left out.
    hostile = [*TABLE_NOTES, "text", {"kind": "created", "time": None, "text": "no time"}, {"text": "fourth"}]
    assert coverage_line({**verified, "table_notes": hostile}, False, "2024-01-01") == (first + expiry + created, False)
    assert coverage_line({**verified, "table_notes": {"text": "x"}}, False) == (first, False)


def test_coverage_is_a_table_of_each_days_counts_ending_with_the_line(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    hostile = {"day": "2026-11-28", "status": "[red]verified", "trail_events": "[bold]1"}  # an endpoint's own answer
    _Answers.coverage = {**INCOMPLETE_COVERAGE, "days": [*INCOMPLETE_COVERAGE["days"], hostile]}
    assert _exit_code(["coverage", "--table", "Music", "--endpoint", api]) == 0
    out, err = capsys.readouterr()
    heading = next(line for line in out.splitlines() if "status" in line)
    assert [cell.strip() for cell in heading.split("┃")[1:-1]] == [
        "day", "status", "calls in the trail", "backfilled", "missing", "not in the trail", "contradicting it",
        "deleted", "restored",
    ]  # fmt: skip
    row = next(line for line in out.splitlines() if "2026-11-24" in line)
    cells = [cell.strip() for cell in row.split("│")[1:-1]]
    assert cells == ["2026-11-24", "unconfirmed", "9", "0", "0", "1", "1", "2", "1"]
    assert "[red]verified" in out  # shown as text, never as markup
    assert "Records deleted after a check, written again from the trail's files, on 2026-11-24 (2)." in " ".join(
        err.split()
    )


def test_the_page_names_the_coverage_statuses_as_the_command_does() -> None:
    page = (Path(__file__).parents[2] / "chalicelib" / "ui" / "index.html").read_text(encoding="utf-8")
    listed = re.search(r"const COVERAGE_LABELS = \[(.*?)\];", page, re.DOTALL)
    assert listed is not None
    assert dict(re.findall(r'\["([a-z_]+)", "([a-z ]+)"\]', listed.group(1))) == COVERAGE_LABELS
    assert list(dict(re.findall(r'\["([a-z_]+)", "([a-z ]+)"\]', listed.group(1)))) == list(COVERAGE_LABELS)


def test_a_history_says_how_complete_it_is_on_stderr_and_carries_on_when_that_is_unknown(
    api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = {"event_time": "2026-11-26T12:00:00Z", "principal_name": "alice", "operation": "Put", "success": True}
    _Answers.status, _Answers.body = 200, {"entries": [entry], "next_token": None}
    _Answers.coverage = INCOMPLETE_COVERAGE
    days = ["--since", "2026-11-25", "--until", "2026-11-27"]
    assert _exit_code(["history", "--table", "Music", "--endpoint", api, *days]) == 0
    out, err = capsys.readouterr()
    assert "alice" in out
    assert "Checked" not in out  # stdout carries the history only
    assert coverage_line(INCOMPLETE_COVERAGE, False)[0] in " ".join(err.split())
    assert any("/audit/coverage?table=Music&until=2026-11-28&since=2026-11-25" in path for path, _ in _Answers.heard)
    _Answers.coverage = {"Code": "ForbiddenError"}  # an answer without days: the history stands
    assert _exit_code(["history", "--table", "Music", "--endpoint", api]) == 0
    assert "coverage unavailable: the API's answer holds no days" in " ".join(capsys.readouterr().err.split())


def test_a_history_says_the_table_was_created_again_only_when_it_shows_entries_from_before(
    api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    newer = {"event_time": "2026-11-26T12:00:00Z", "principal_name": "alice", "operation": "Put", "success": True}
    older = {**newer, "event_time": "2026-11-24T08:00:00Z", "principal_name": "bob"}
    _Answers.coverage = {**INCOMPLETE_COVERAGE, "table_notes": TABLE_NOTES}
    said = []
    for entries in ([newer], [newer, older]):
        _Answers.status, _Answers.body = 200, {"entries": entries, "next_token": None}
        assert _exit_code(["history", "--table", "Music", "--endpoint", api, "--since", "2026-11-20"]) == 0
        said.append(" ".join(capsys.readouterr().err.split()))
    expiry, created = (f"The table: {note['text']}." for note in TABLE_NOTES)
    assert [expiry in line for line in said] == [True, True]
    assert [created in line for line in said] == [False, True]


def test_a_record_the_trail_does_not_confirm_is_marked_in_the_history_table(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # the note on one line
    entries = [
        {"event_id": f"e{n}", "event_time": "2026-11-24T12:00:00Z", "principal_name": name, "operation": "Put",
         "success": True}
        for n, name in enumerate(["mallory", "alice", "bob"])
    ]  # fmt: skip
    _Answers.status, _Answers.body = 200, {"entries": entries, "next_token": None}
    # e1 a call the check restored: GET /audit shows the trail's own record of it, marked as such.
    day = {**INCOMPLETE_COVERAGE["days"][0], "unconfirmed_ids": ["e0"], "restored_ids": ["e1"]}
    _Answers.coverage = {**INCOMPLETE_COVERAGE, "days": [day]}
    assert _exit_code(["history", "--table", "Music", "--endpoint", api]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("unconfirmed: CloudTrail's own files lack or contradict this record") == 1
    assert out.count("restored: CloudTrail's own record of this call, which replaced a copy that contradicted it") == 1
    assert out.index("mallory") < out.index("unconfirmed:") < out.index("alice") < out.index("restored:")
    assert out.index("restored:") < out.index("bob")


def test_evidence_is_one_zip_of_the_history_its_coverage_and_checksums_never_overwritten(
    api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = [
        {"event_id": f"e{n}", "item_index": 0, "event_time": f"2026-11-26T12:00:0{n}Z", "operation": "Put",
         "success": True, "item_key": '{"id":"42"}', "user_agent": "=cmd", "attribute_names": ["id"]}
        for n in range(3)
    ]  # fmt: skip
    _Answers.status, _Answers.body = 200, {"entries": entries, "next_token": None}
    _Answers.coverage = INCOMPLETE_COVERAGE
    out = tmp_path / "order-42.zip"
    arguments = ["evidence", "--table", "Music", "--key", '{"id": "42"}', "--endpoint", api, "--out", str(out)]
    assert _exit_code(arguments) == 0
    with zipfile.ZipFile(out) as bundle:
        files = {name: bundle.read(name) for name in bundle.namelist()}
    assert set(files) == {"history.json", "history.csv", "coverage.json", "manifest.json", "SHA256SUMS", "README.txt"}
    assert json.loads(files["history.json"]) == entries
    assert json.loads(files["coverage.json"]) == INCOMPLETE_COVERAGE
    rows = list(csv.DictReader(io.StringIO(files["history.csv"].decode())))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [(row["event_id"], row["user_agent"]) for row in rows] == [(e["event_id"], "'=cmd") for e in entries]
    sums = dict(reversed(line.split("  ")) for line in files["SHA256SUMS"].decode().splitlines())
    assert sums == {name: hashlib.sha256(files[name]).hexdigest() for name in sums}
    assert set(sums) == {"history.json", "history.csv", "coverage.json", "manifest.json"}
    manifest = json.loads(files["manifest.json"])
    assert (manifest["entries"], manifest["query"]) == (3, {"table": "Music", "key": '{"id": "42"}'})
    assert manifest["coverage"] == coverage_line(INCOMPLETE_COVERAGE, False)[0]
    assert manifest["coverage"] in files["README.txt"].decode()
    assert "It holds only" not in files["README.txt"].decode()  # one item's whole history
    assert f"wrote {out}: 3 entries" in " ".join(capsys.readouterr().err.split())

    before = out.read_bytes()
    assert _exit_code(arguments) == 2
    assert "exists; choose another --out" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_evidence_says_in_words_which_calls_its_filters_kept(api: str, tmp_path: Path) -> None:
    _Answers.status, _Answers.body, _Answers.coverage = 200, {"entries": [], "next_token": None}, INCOMPLETE_COVERAGE
    out = tmp_path / "address.zip"
    filters = ["--since", "2026-11-20", "--until", "2026-11-27", "--principal", "AKIAIOSFODNN7EXAMPLE", "--operation",
               "Put", "--result", "DENIED", "--source-ip", "203.0.113.7"]  # fmt: skip
    assert _exit_code(["evidence", "--table", "Music", *filters, "--endpoint", api, "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as bundle:
        readme = " ".join(bundle.read("README.txt").decode().split())
    assert (
        "It holds only the calls from 2026-11-20, before 2026-11-27, by AKIAIOSFODNN7EXAMPLE, of the operation Put, "
        "from the address 203.0.113.7, that were refused their permission: the query's filters (manifest.json)."
    ) in readme
    assert readme.startswith("Deutzia evidence: the history of every item in the DynamoDB table Music,")
    ranged = tmp_path / "range.zip"
    ranges = ["--source-ip", "203.0.113.0/24"]
    assert _exit_code(["evidence", "--table", "Music", *ranges, "--endpoint", api, "--out", str(ranged)]) == 0
    with zipfile.ZipFile(ranged) as bundle:
        said = " ".join(bundle.read("README.txt").decode().split())
    assert ", from the addresses of 203.0.113.0/24: the query's filters" in said


def test_evidence_from_a_stack_names_its_trail_in_the_command_that_validates_the_trail_files(
    api: str, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    trail = "arn:aws:cloudtrail:us-east-1:123456789012:trail/deutzia-evidence-dynamodb"
    template = {
        "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"EndpointURL": {"Value": f"{api}/api/"}, "TrailArn": {"Value": trail}},
    }
    boto3.client("cloudformation").create_stack(StackName="deutzia-evidence", TemplateBody=json.dumps(template))
    _Answers.status, _Answers.body = 200, {"entries": [], "next_token": None}
    _Answers.coverage = INCOMPLETE_COVERAGE
    written = {}
    for via in ("--stack", "--endpoint"):
        out = tmp_path / f"{via[2:]}.zip"
        where = ["--stack", "deutzia-evidence"] if via == "--stack" else ["--endpoint", api]
        assert _exit_code(["evidence", "--table", "Music", *where, "--out", str(out)]) == 0
        with zipfile.ZipFile(out) as bundle:
            written[via] = (bundle.read("README.txt").decode(), json.loads(bundle.read("manifest.json")))
    readme, manifest = written["--stack"]
    assert (
        f"aws cloudtrail validate-logs --trail-arn {trail} --region us-east-1 "
        "--start-time 2026-11-24T00:00:00Z --end-time 2026-11-28T00:00:00Z"
    ) in readme
    assert manifest["trail_arn"] == trail
    readme, manifest = written["--endpoint"]  # an API alone does not say which trail feeds it
    assert "--trail-arn <the stack's TrailArn output> --start-time 2026-11-24T00:00:00Z" in readme
    assert "trail_arn" not in manifest


def test_evidence_that_could_not_be_read_whole_leaves_no_file(api: str, tmp_path: Path) -> None:
    _Answers.status, _Answers.body = 503, {"Code": "ServiceUnavailableError", "Message": "Athena is throttling"}
    _Answers.coverage = INCOMPLETE_COVERAGE
    out = tmp_path / "evidence.zip"
    assert _exit_code(["evidence", "--table", "Music", "--endpoint", api, "--out", str(out)]) == 5
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def _tables_api(histories: dict[str, list[dict[str, Any]]]) -> Callable[[str, dict[str, list[str]]], tuple[int, Any]]:
    """GET /tables and GET /audit over each table's history (newest first), in pages of `limit` with a token."""

    def answer(path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        if path.endswith("/tables"):
            return 200, {"tables": list(histories)}
        table, limit = query["table"][0], int(query["limit"][0])
        start = int(query.get("next_token", ["0"])[0])
        since = query.get("since", [""])[0]
        found = [entry for entry in histories[table] if str(entry.get("event_time", "")) >= since]
        entries = found[start : start + limit]
        more = start + limit < len(found)
        return 200, {"table": table, "entries": entries, "next_token": str(start + limit) if more else None}

    return answer


def test_every_tables_history_is_merged_newest_first_reading_no_more_than_it_shows(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")

    def calls(table: str, hours: list[int]) -> list[dict[str, Any]]:
        return [
            {"event_time": f"2026-11-28T{hour:02d}:00:00Z", "table_name": table, "principal_name": f"{table}-{hour}",
             "operation": "Put", "success": True, "event_id": f"{table}-{hour}", "item_key": '{"id":"1"}'}
            for hour in sorted(hours, reverse=True)
        ]  # fmt: skip

    histories = {"Music": calls("Music", [1, 5, 9, 13]), "Books": calls("Books", [3, 4, 20]), "Empty": []}
    _Answers.routes, _Answers.heard = _tables_api(histories), []
    _Answers.coverage = {**INCOMPLETE_COVERAGE, "trail_problems": []}
    arguments = ["history", "--table", "*", "--principal", "AKIABOB", "--endpoint", api, "--format", "json",
                 "--since", "2026-11-28", "--all", "--page-size", "2"]  # fmt: skip
    assert _exit_code(arguments) == 0
    merged = json.loads(capsys.readouterr().out)
    assert [entry["event_id"] for entry in merged] == [
        "Books-20", "Music-13", "Music-9", "Music-5", "Books-4", "Books-3", "Music-1",
    ]  # fmt: skip
    asked = [
        urllib.parse.parse_qs(urllib.parse.urlparse(path).query) for path, _ in _Answers.heard if "/audit?" in path
    ]
    assert {query["principal"][0] for query in asked} == {"AKIABOB"}  # each table asked with the same filters
    # With a limit, each table is read only as far as the merge reaches: 3 entries need at most 3 of each.
    _Answers.heard = []
    assert _exit_code(["history", "--table", "*", "--endpoint", api, "--since", "2026-11-28", "--limit", "3"]) == 0
    out, err = capsys.readouterr()
    heading = next(line for line in out.splitlines() if "who" in line)
    assert [cell.strip() for cell in heading.split("┃")[1:-1]][:3] == ["time", "table", "who"]
    shown = [line.split("│")[2].strip() for line in out.splitlines() if "2026-11-28T" in line]
    assert shown == ["Books", "Music", "Music"]
    assert "every audited table (3) (recent calls), newest first" in out
    limits = [query["limit"][0] for query in (urllib.parse.parse_qs(urllib.parse.urlparse(path).query)
              for path, _ in _Answers.heard if "/audit?" in path)]  # fmt: skip
    assert sorted(limits) == ["3", "3", "3"]
    # The coverage of each table shown, named; none of a table with nothing shown.
    said = " ".join(err.split())
    assert "Books: Checked against CloudTrail's own files" in said
    assert "Music: Checked against CloudTrail's own files" in said
    assert "Empty:" not in said


def test_every_table_is_bounded_for_history_and_evidence(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    _Answers.routes = _tables_api({f"T{number:03d}": [] for number in range(51)})
    assert _exit_code(["history", "--table", "*", "--endpoint", api]) == 2
    err = capsys.readouterr().err
    assert "every table's calls since " in err  # without --since, the last 7 days of each
    assert "--table '*' reads at most 50 tables and 51 are audited" in err
    assert _exit_code(["evidence", "--table", "*", "--endpoint", api, "--out", "never.zip"]) == 2
    assert "--table '*' reads at most 50 tables" in capsys.readouterr().err
    assert not Path("never.zip").exists()


def test_evidence_of_every_table_holds_the_merged_history_and_each_tables_coverage(
    api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def put(table: str, second: int) -> dict[str, Any]:
        return {"event_id": f"{table}-{second}", "item_index": 0, "event_time": f"2026-11-26T12:00:0{second}Z",
                "operation": "Put", "success": True, "table_name": table, "access_key_id": "AKIALEAKED"}  # fmt: skip

    histories = {"Music": [put("Music", 5), put("Music", 1)], "Books": [put("Books", 3)], "Quiet": []}
    _Answers.routes = _tables_api(histories)
    _Answers.coverage = {**INCOMPLETE_COVERAGE, "trail_problems": []}
    out = tmp_path / "leaked.zip"
    arguments = ["evidence", "--table", "*", "--principal", "AKIALEAKED", "--since", "2026-11-20", "--endpoint",
                 api, "--out", str(out)]  # fmt: skip
    assert _exit_code(arguments) == 0
    with zipfile.ZipFile(out) as bundle:
        files = {name: bundle.read(name) for name in bundle.namelist()}
    assert [entry["event_id"] for entry in json.loads(files["history.json"])] == ["Music-5", "Books-3", "Music-1"]
    # Each table's coverage, the one without an entry too: that the key did nothing there is evidence as well.
    assert json.loads(files["coverage.json"]) == {"tables": {name: _Answers.coverage for name in histories}}
    manifest = json.loads(files["manifest.json"])
    assert manifest["tables"] == list(histories)
    line = coverage_line(_Answers.coverage, False)[0]
    assert manifest["coverage"] == {name: line for name in histories}
    readme = files["README.txt"].decode()
    assert "in every audited DynamoDB table (3: Music, Books, Quiet)" in " ".join(readme.split())
    assert f"Quiet: {line}" in readme
    sums = dict(reversed(line.split("  ")) for line in files["SHA256SUMS"].decode().splitlines())
    assert sums == {name: hashlib.sha256(files[name]).hexdigest() for name in sums}
    assert f"wrote {out}: 3 entries. Music: Checked" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(
    ("option", "value", "bad", "says"),
    [
        ("--result", "AccessDenied", "Access Denied", "--result: must be ok, failed, denied, or an error code"),
        ("--source-ip", "203.0.113.7", "203.0.113.7; drop", "--source-ip: is not where a call came from: an IP"),
        ("--source-ip", "203.0.113.0/24", "2001:db8::/32", "--source-ip: is not a range of IPv4 addresses"),
    ],
)
def test_a_filter_asks_as_the_api_does_and_a_bad_one_is_named_as_the_option_first(
    api: str, capsys: pytest.CaptureFixture[str], option: str, value: str, bad: str, says: str
) -> None:
    _Answers.status, _Answers.body, _Answers.heard = 200, {"entries": [], "next_token": None}, []
    assert _exit_code(["history", "--table", "Music", option, value, "--endpoint", api, "--format", "json"]) == 0
    (asked,) = [urllib.parse.urlparse(path).query for path, _ in _Answers.heard if "/audit?" in path]
    assert urllib.parse.parse_qs(asked)[option.removeprefix("--").replace("-", "_")] == [value]
    _Answers.heard = []
    assert _exit_code(["history", "--table", "Music", option, bad, "--endpoint", api]) == 2
    assert f"bad request: {says}" in capsys.readouterr().err
    assert _Answers.heard == []  # refused before any request


def test_a_filtered_historys_title_says_which_calls_it_shows(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    entry = {"event_time": "2026-11-26T12:00:00Z", "principal_name": "alice", "operation": "Put", "success": False}
    _Answers.status, _Answers.body, _Answers.coverage = (
        200,
        {"entries": [entry], "next_token": None},
        INCOMPLETE_COVERAGE,
    )
    filters = ["--principal", "AKIAIOSFODNN7EXAMPLE", "--result", "denied", "--source-ip", "203.0.113.0/24"]
    assert _exit_code(["history", "--table", "Music", "--key", '{"id": "7"}', *filters, "--endpoint", api]) == 0
    assert " ".join(capsys.readouterr().out.split()).startswith(
        'Music {"id": "7"}, newest first: only the calls by AKIAIOSFODNN7EXAMPLE, from the addresses of '
        "203.0.113.0/24, that were refused their permission"
    )
    assert _exit_code(["history", "--table", "Music", "--key", '{"id": "7"}', "--endpoint", api]) == 0
    assert capsys.readouterr().out.splitlines()[0] == 'Music {"id": "7"}, newest first'  # an item's whole history


def test_since_and_until_take_a_span_back_or_an_offset_and_ask_in_utc(
    api: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _Answers.status, _Answers.body, _Answers.heard = 200, {"entries": [], "next_token": None}, []
    before = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)
    arguments = ["history", "--table", "Music", "--since", "6h", "--until", "2099-01-01T09:00+01:00",
                 "--endpoint", api, "--format", "json"]  # fmt: skip
    assert _exit_code(arguments) == 0
    (asked,) = [
        urllib.parse.parse_qs(urllib.parse.urlparse(path).query) for path, _ in _Answers.heard if "/audit?" in path
    ]
    since = datetime.strptime(asked["since"][0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before <= since <= before + timedelta(seconds=60)  # the command read the clock after the test did
    assert asked["until"] == ["2099-01-01T08:00:00Z"]
    _Answers.heard = []
    assert _exit_code(["history", "--table", "Music", "--since", "2026-11-30T09:00", "--endpoint", api]) == 2
    assert "bad request: --since: names no time zone: end it with Z (UTC) or its offset" in capsys.readouterr().err
    assert _Answers.heard == []  # refused before any request
    # A coverage's days: the UTC day a span back reaches.
    _Answers.coverage = INCOMPLETE_COVERAGE
    assert _exit_code(["coverage", "--table", "Music", "--since", "7d", "--until", "0d", "--endpoint", api]) == 0
    (asked,) = [urllib.parse.parse_qs(urllib.parse.urlparse(path).query) for path, _ in _Answers.heard]
    today = datetime.now(UTC).date()
    assert (asked["since"], asked["until"]) in [
        ([(day - timedelta(days=7)).isoformat()], [day.isoformat()]) for day in (today, today - timedelta(days=1))
    ]  # the day may turn between the two reads of the clock


def test_every_tables_coverage_side_by_side_then_each_tables_line(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    _Answers.routes = _tables_api({"Music": [], "Books": []})
    _Answers.coverage = INCOMPLETE_COVERAGE
    assert _exit_code(["coverage", "--table", "*", "--endpoint", api]) == 0
    out, err = capsys.readouterr()
    heading = next(line for line in out.splitlines() if "table" in line and "┃" in line)
    assert [cell.strip() for cell in heading.split("┃")[1:-1]] == ["table", *COVERAGE_LABELS.values(), "trail problems"]
    rows = {cells[0]: cells[1:] for cells in ([c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines()
            if line.startswith("│"))}  # fmt: skip
    # INCOMPLETE_COVERAGE: 2 days incomplete, 1 unconfirmed, 1 not checked, and the trail not logging.
    assert rows == {name: ["", "", "2", "1", "", "1", "1"] for name in ("Music", "Books")}
    said = " ".join(err.split())
    assert f"Music: {coverage_line(INCOMPLETE_COVERAGE, False)[0]}" in said
    assert f"Books: {coverage_line(INCOMPLETE_COVERAGE, False)[0]}" in said
    monkeypatch.setenv("COLUMNS", "80")  # too narrow for the headings: a block of labelled counts a table, none cut
    assert _exit_code(["coverage", "--table", "*", "--endpoint", api]) == 0
    narrow = capsys.readouterr().out.splitlines()
    assert "…" not in "".join(narrow)
    assert [line.rsplit(maxsplit=1) for line in narrow[1:6]] == [
        ["table", "Music"], ["incomplete", "2"], ["with records the trail does not confirm", "1"],
        ["not checked yet", "1"], ["trail problems", "1"],
    ]  # fmt: skip
    assert _exit_code(["coverage", "--table", "*", "--endpoint", api, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "tables": {"Music": INCOMPLETE_COVERAGE, "Books": INCOMPLETE_COVERAGE}
    }


def test_follow_shows_the_last_entries_then_each_new_one_once_oldest_first_until_interrupted(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import deutzia_cli.follow

    def put(second: int, table: str = "Music") -> dict[str, Any]:
        return {"event_id": f"{table}-{second}", "item_index": 0, "event_time": f"2026-11-28T12:00:{second:02d}Z",
                "operation": "Put", "success": True, "table_name": table, "principal_name": "alice"}  # fmt: skip

    histories: dict[str, list[dict[str, Any]]] = {"Music": [put(5), put(3)], "Books": [put(4, "Books")]}
    _Answers.routes, _Answers.heard = _tables_api(histories), []
    arrivals = [
        [put(9), put(7)],  # two new calls
        [put(9), put(8), put(6, "Books")],  # again the newest, one more, and one that arrived late
        [],
    ]
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # between polls, calls reach the audit; the third poll's wait is Ctrl-C
        waits.append(seconds)
        if not arrivals:
            raise KeyboardInterrupt
        for entry in arrivals.pop(0):
            table = histories[entry["table_name"]]
            if entry not in table:
                table.insert(0, entry)
                table.sort(key=lambda found: found["event_time"], reverse=True)

    monkeypatch.setattr(deutzia_cli.follow, "time", SimpleNamespace(sleep=sleep))  # the follow's own waits only
    arguments = ["history", "--table", "*", "--endpoint", api, "--since", "2026-11-28", "--limit", "2",
                 "--follow", "--interval", "2", "--format", "json"]  # fmt: skip
    assert _exit_code(arguments) == 0
    shown = [json.loads(line)["event_id"] for line in capsys.readouterr().out.splitlines()]
    # The last two, oldest first; then what came, oldest first, each once (the one that came late too).
    assert shown == ["Books-4", "Music-5", "Music-7", "Music-9", "Books-6", "Music-8"]
    assert waits == [2.0] * 4
    asked = [urllib.parse.urlparse(path).query for path, _ in _Answers.heard if "/audit?" in path]
    sinces = {urllib.parse.parse_qs(query)["since"][0] for query in asked}
    assert "2026-11-28T11:55:09Z" in sinces  # the newest shown, less five minutes: late arrivals are read again


def test_follow_takes_no_end_and_no_csv(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in (["--until", "2026-11-29"], ["--all"], ["--format", "csv"]):
        assert _exit_code(["history", "--table", "Music", "--endpoint", api, "--follow", *extra]) == 2
        assert "--follow shows calls as they come" in capsys.readouterr().err
    assert _exit_code(["history", "--table", "Music", "--endpoint", api, "--follow", "--interval", "0.5"]) == 2


def test_follow_as_a_table_is_one_line_a_call_a_failed_one_in_red(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import deutzia_cli.follow

    failed = {"event_id": "e2", "item_index": 0, "event_time": "2026-11-28T12:00:02Z", "operation": "Update",
              "event_name": "UpdateItem", "success": False, "error_code": "AccessDenied",
              "principal_name": "[red]mallory", "item_key": '{"id":"1"}', "source_ip": "203.0.113.7",
              "table_name": "Music"}  # fmt: skip
    histories: dict[str, list[dict[str, Any]]] = {"Music": []}
    _Answers.routes = _tables_api(histories)
    polls: list[float] = []

    def sleep(seconds: float) -> None:
        polls.append(seconds)
        if len(polls) > 1:
            raise KeyboardInterrupt
        histories["Music"].append(failed)

    monkeypatch.setattr(deutzia_cli.follow, "time", SimpleNamespace(sleep=sleep))
    assert _exit_code(["history", "--table", "Music", "--endpoint", api, "--since", "2026-11-28", "--follow"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split("  ") == [
        "2026-11-28T12:00:02Z", "[red]mallory", "Update", '{"id":"1"}', "", "failed: AccessDenied", "203.0.113.7",
    ]  # fmt: skip  # one table's: no table on the line; a caller's markup shown as text


def test_on_a_narrow_terminal_each_entry_is_a_block_of_labelled_lines_none_cut_none_empty(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = {"event_time": "2024-05-01T12:00:00Z", "principal_name": "[red]alice", "operation": "Get", "success": True,
             "event_name": "GetItem", "item_key": '{"id":"k-42"}', "source_ip": "192.0.2.1"}  # fmt: skip
    failed = {
        **entry,
        "operation": "Delete",
        "event_name": "DeleteItem",
        "success": False,
        "error_code": "AccessDenied",
    }
    _Answers.status, _Answers.body = 200, {"entries": [entry, failed], "next_token": None}
    for width in (40, 80):
        monkeypatch.setenv("COLUMNS", str(width))
        _exit_code(["history", "--table", "Music", "--endpoint", api])
        lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
        assert not any("┃" in line or "│" in line for line in lines)
        assert all(len(line) <= width for line in lines)
        entries = lines[next(n for n, line in enumerate(lines) if line.startswith("time ")) :]  # after the title
        labelled = [line.split(maxsplit=1) for line in entries if line]
        assert labelled == [
            ["time", "2024-05-01T12:00:00Z"], ["who", "[red]alice"], ["operation", "Get"], ["key", '{"id":"k-42"}'],
            ["result", "ok"], ["from", "192.0.2.1"],
            ["time", "2024-05-01T12:00:00Z"], ["who", "[red]alice"], ["operation", "Delete"],
            ["key", '{"id":"k-42"}'], ["result", "failed: AccessDenied"], ["from", "192.0.2.1"],
        ]  # fmt: skip  # no attributes: none named; a caller's markup shown as text
        assert entries.count("") == 1  # one blank line between two entries
    monkeypatch.setenv("COLUMNS", "120")
    _exit_code(["history", "--table", "Music", "--endpoint", api])
    shown = capsys.readouterr().out
    assert "┃ time                 ┃" in shown  # a table where it fits, its times whole
    assert "│ 2024-05-01T12:00:00Z │" in shown


def test_emoji_codes_in_values_are_shown_as_written(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    entry = {"event_time": "2024-05-01T12:00:00Z", "principal_name": ":smile:", "operation": "Put", "success": True,
             "event_name": "PutItem", "item_key": '{"id":":a:"}'}  # fmt: skip
    _Answers.status, _Answers.body = 200, {"entries": [entry], "next_token": None}
    note = {"kind": "expiry", "time": None, "text": "Time to Live deletes items once the time in :a: has passed"}
    _Answers.coverage = {**INCOMPLETE_COVERAGE, "table_notes": [note]}
    for width in ("200", "40"):  # a table, then blocks
        monkeypatch.setenv("COLUMNS", width)
        _exit_code(["history", "--table", "Music", "--key", '{"id": ":a:"}', "--endpoint", api])
        out, err = capsys.readouterr()
        assert ":smile:" in out
        assert 'Music {"id": ":a:"}' in out  # the key, in the title
        assert "once the time in :a: has passed" in " ".join(err.split())


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252", "ascii"])
def test_a_value_the_output_cannot_encode_is_written_as_its_escape_never_a_traceback(
    api: str, monkeypatch: pytest.MonkeyPatch, encoding: str
) -> None:
    """A terminal or file in another encoding than UTF-8 (a Windows console's file, `LANG=C` where there is no UTF-8)
    and a key holding an emoji: each character it cannot write is its backslash escape, the table still aligned, and
    JSON stays valid JSON of the value as logged."""
    import sys

    key = '{"id":"\U0001f3b5 zo\u00eb"}'
    entry = {"event_time": "2024-05-01T12:00:00Z", "principal_name": "zo\u00eb \u2603", "operation": "Put",
             "success": True, "event_name": "PutItem", "item_key": key, "table_name": "Music"}  # fmt: skip
    _Answers.status, _Answers.body = 200, {"entries": [entry], "next_token": None}
    monkeypatch.setenv("COLUMNS", "200")
    for output in ("table", "json", "csv"):
        streams = [io.TextIOWrapper(io.BytesIO(), encoding=encoding) for _ in range(2)]
        monkeypatch.setattr(sys, "stdout", streams[0])
        monkeypatch.setattr(sys, "stderr", streams[1])
        code = _exit_code(["history", "--table", "Music", "--format", output, "--endpoint", api])
        for stream in streams:
            stream.flush()
        out, err = (stream.buffer.getvalue().decode(encoding) for stream in streams)  # type: ignore[attr-defined]
        assert code == 0, err
        if output == "json":
            assert json.loads(out)[0]["item_key"] == key
        else:
            assert "\\U0001f3b5" in out
            assert "\\u2603" in out
        if output == "table":
            lengths = {len(line) for line in out.splitlines() if line.startswith(("|", "\u2502", "+"))}
            assert len(lengths) == 1, out  # every line of the table as wide as the others


def test_a_coverage_table_keeps_each_day_and_status_whole_and_leaves_out_counts_no_day_has(
    api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    unchecked = [{"day": "2026-11-27", "status": "no_trail_files"}, {"day": "2026-11-28", "status": "not_checked"}]
    checked = {"day": "2026-11-29", "status": "verified", "trail_events": 4, "backfilled": 0, "still_missing": 0}
    _Answers.coverage = {**INCOMPLETE_COVERAGE, "days": [*unchecked, checked]}
    assert _exit_code(["coverage", "--table", "Music", "--endpoint", api]) == 0
    out = capsys.readouterr().out
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if line.startswith("│")]
    assert rows == [["2026-11-27", "no_trail_files", "", "", ""], ["2026-11-28", "not_checked", "", "", ""],
                    ["2026-11-29", "verified", "4", "0", "0"]]  # fmt: skip
    heading = " ".join(line for line in out.splitlines() if line.startswith("┃"))
    assert "deleted" not in heading
    assert "restored" not in heading
