"""`deutzia` as a user runs it (`.venv/bin/deutzia`, from the virtualenv `make` made) against the local stack: every
format, paging with `--all`, the table view's escaping, the API's refusals as one line and an exit code, and an
evidence bundle that `sha256sum -c` checks."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.e2e.conftest import Stack

TABLE = "E2eCli"
KEY = '{"id": "cli-1"}'


def deutzia(stack: Stack, *arguments: str) -> subprocess.CompletedProcess[str]:
    return stack.run([str(Path(sys.executable).parent / "deutzia"), *arguments], env={**stack.env, "COLUMNS": "250"})


def _history(stack: Stack) -> None:
    stack.create_table(TABLE)
    dynamodb = stack.client("dynamodb")
    for n in range(5):
        dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "cli-1"}, "n": {"N": str(n)}})
    dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "[red]<script>alert(1)</script>"}})
    stack.wait_for(lambda entries: len(entries) >= 6, table=TABLE)


def test_history_in_every_format_with_paging_and_refusals(stack: Stack) -> None:
    _history(stack)

    as_json = deutzia(stack, "history", "--table", TABLE, "--key", KEY, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    entries = json.loads(as_json.stdout)
    assert len(entries) == 5
    assert [e["event_time"] for e in entries] == sorted((e["event_time"] for e in entries), reverse=True)

    paged = deutzia(stack, "history", "--table", TABLE, "--key", KEY, "--all", "--format", "json", "--page-size", "2")
    assert [e["event_id"] for e in json.loads(paged.stdout)] == [e["event_id"] for e in entries]
    limited = deutzia(stack, "history", "--table", TABLE, "--key", KEY, "--limit", "3", "--format", "json")
    assert [e["event_id"] for e in json.loads(limited.stdout)] == [e["event_id"] for e in entries[:3]]

    as_csv = deutzia(stack, "history", "--table", TABLE, "--key", KEY, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [row["event_id"] for row in rows] == [e["event_id"] for e in entries]
    assert {row["item_key"] for row in rows} == {'{"id":"cli-1"}'}

    as_table = deutzia(stack, "history", "--table", TABLE)
    assert as_table.returncode == 0, as_table.stderr
    assert "[red]<script>alert(1)</script>" in as_table.stdout  # shown as text, never as markup
    assert "6 entries" in as_table.stderr
    today = datetime.now(UTC).date()
    said = " ".join(as_table.stderr.split())  # a table's calls: its last 7 days, and how complete they are
    assert f"the table's calls since {today - timedelta(days=6)} (--since for earlier ones)" in said
    assert f"Checked against CloudTrail's own files, {today - timedelta(days=6)} to {today}:" in said
    item = deutzia(stack, "history", "--table", TABLE, "--key", KEY)  # an item's: the API's 30 days up to today
    said = " ".join(item.stderr.split())
    assert f"Checked against CloudTrail's own files, {today - timedelta(days=29)} to {today}:" in said
    assert "Checked" not in as_table.stdout

    bad_key = deutzia(stack, "history", "--table", TABLE, "--key", "not json")
    assert (bad_key.returncode, bad_key.stdout) == (2, "")
    assert bad_key.stderr.strip().startswith("error: bad request: --key:")  # named before the API is asked

    coverage = deutzia(stack, "coverage", "--table", TABLE, "--format", "json")
    assert coverage.returncode == 0, coverage.stderr
    assert len(json.loads(coverage.stdout)["days"]) == 30


def test_a_leaked_keys_calls_on_every_table_in_one_history_and_one_bundle(stack: Stack, tmp_path: Path) -> None:
    leaked = "AKIAE2ELEAKED0000001"  # an access key the stack does not know: its calls name it as caller and key
    tables = ["E2eLeakA", "E2eLeakB"]
    for table in tables:
        stack.create_table(table)
    thief = stack.client("dynamodb", {"AccessKeyId": leaked, "SecretAccessKey": "x"})
    owner = stack.client("dynamodb")
    for n in range(3):
        for table in tables:
            thief.put_item(TableName=table, Item={"id": {"S": f"stolen-{n}"}})
            owner.put_item(TableName=table, Item={"id": {"S": f"kept-{n}"}})
    for table in tables:
        stack.wait_for(lambda entries: len(entries) >= 6, table=table)

    found = deutzia(stack, "history", "--table", "*", "--principal", leaked, "--format", "json")

    assert found.returncode == 0, found.stderr
    entries = json.loads(found.stdout)
    assert sorted((entry["table_name"], entry["item_key"]) for entry in entries) == sorted(
        (table, f'{{"id":"stolen-{n}"}}') for table in tables for n in range(3)
    )
    assert {entry["access_key_id"] for entry in entries} == {leaked}
    assert [e["event_time"] for e in entries] == sorted((e["event_time"] for e in entries), reverse=True)
    as_table = deutzia(stack, "history", "--table", "*", "--principal", leaked)
    assert as_table.returncode == 0, as_table.stderr
    assert "6 entries" in as_table.stderr
    said = " ".join(as_table.stderr.split())
    assert all(f"{table}: Checked against CloudTrail's own files" in said for table in tables)
    out = tmp_path / "leaked.zip"
    bundle = deutzia(stack, "evidence", "--table", "*", "--principal", leaked, "--out", str(out))
    assert bundle.returncode == 0, bundle.stderr
    with zipfile.ZipFile(out) as written:
        written.extractall(tmp_path / "leaked")
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path / "leaked", capture_output=True, check=False
    )
    assert checked.returncode == 0, checked.stdout
    assert json.loads((tmp_path / "leaked" / "history.json").read_text(encoding="utf-8")) == entries
    covered = json.loads((tmp_path / "leaked" / "coverage.json").read_text(encoding="utf-8"))["tables"]
    assert set(tables) <= set(covered)  # every audited table's days, those the key never touched too


def test_evidence_for_an_auditor_checks_out_with_sha256sum(stack: Stack, tmp_path: Path) -> None:
    table = "E2eEvidence"
    stack.create_table(table)
    for n in range(5):
        stack.client("dynamodb").put_item(TableName=table, Item={"id": {"S": "cli-1"}, "n": {"N": str(n)}})
    stack.wait_for(lambda entries: len(entries) == 5, table=table, key=KEY)
    out = tmp_path / "cli-1.zip"
    made = deutzia(stack, "evidence", "--table", table, "--key", KEY, "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert f"wrote {out}: 5 entries" in " ".join(made.stderr.split())
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(out) as bundle:
        bundle.extractall(unpacked)
    checked = subprocess.run(
        ["sha256sum", "-c", "SHA256SUMS"], cwd=unpacked, capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    history = deutzia(stack, "history", "--table", table, "--key", KEY, "--all", "--format", "json")
    assert json.loads((unpacked / "history.json").read_text(encoding="utf-8")) == json.loads(history.stdout)
    again = deutzia(stack, "evidence", "--table", table, "--key", KEY, "--out", str(out))
    assert (again.returncode, again.stdout) == (2, "")


def test_sql_on_the_local_stack_as_a_table_and_as_csv(stack: Stack) -> None:
    query = "select operation, count(*) as calls from audit where table_name = 'E2eCli' group by operation"
    as_csv = deutzia(stack, "sql", query, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    assert list(csv.reader(io.StringIO(as_csv.stdout))) == [["operation", "calls"], ["Put", "6"]]
    as_table = deutzia(stack, "sql", query)
    assert "Put" in as_table.stdout
    assert "1 row" in as_table.stderr
    wrong = deutzia(stack, "sql", "select nope from audit")
    assert (wrong.returncode, wrong.stdout) == (2, "")
    assert wrong.stderr.startswith("error: SQL failed:")


def test_follow_shows_a_call_as_it_reaches_the_audit_and_ctrl_c_ends_it(stack: Stack) -> None:
    import signal
    import time

    table = "E2eFollow"
    stack.create_table(table)
    stack.client("dynamodb").put_item(TableName=table, Item={"id": {"S": "before"}})
    stack.wait_for(lambda entries: len(entries) == 1, table=table)
    command = [str(Path(sys.executable).parent / "deutzia"), "history", "--table", table, "--follow", "--interval", "2",
               "--format", "json"]  # fmt: skip
    following = subprocess.Popen(
        command, env={**stack.env, "COLUMNS": "250"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert following.stdout is not None
        first = json.loads(following.stdout.readline())  # the history's last entry
        assert first["item_key"] == '{"id":"before"}'
        time.sleep(1)
        stack.client("dynamodb").put_item(TableName=table, Item={"id": {"S": "after"}})
        came = json.loads(following.stdout.readline())  # within a poll or two of reaching the audit
        assert (came["item_key"], came["operation"]) == ('{"id":"after"}', "Put")
    finally:
        following.send_signal(signal.SIGINT)
        _, err = following.communicate(timeout=30)
    assert following.returncode == 0, err
    assert "following: new calls every 2 s (Ctrl-C ends)" in err
