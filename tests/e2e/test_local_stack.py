"""The whole trail on one machine, driven by real clients (boto3 and the AWS CLI) and read back through GET /audit,
the trail bucket, the Glue catalog and SQL."""

from __future__ import annotations

import gzip
import json
import re
import statistics
import threading
import time
import urllib.parse
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from deutzia_local.child import create_keyed_table
from deutzia_local.demo import KEY as DEMO_KEY
from tests.e2e.conftest import Stack, settled_today

ACCOUNT = "123456789012"


def _key(value: str) -> str:
    return json.dumps({"id": value})


def test_every_call_appears_once_attributed_to_its_caller(stack: Stack) -> None:
    stack.create_table("E2eOrders")
    alice, bob = stack.user("e2e-alice"), stack.user("e2e-bob")
    as_alice = stack.client("dynamodb", alice)
    item = {"id": {"S": "order-1"}, "amount": {"N": "10"}}
    as_alice.put_item(TableName="E2eOrders", Item=item)
    updated = stack.aws_cli(
        bob,
        "dynamodb",
        "update-item",
        "--table-name",
        "E2eOrders",
        "--key",
        '{"id": {"S": "order-1"}}',
        "--update-expression",
        "SET amount = :t",
        "--expression-attribute-values",
        '{":t": {"N": "12"}}',
    )
    assert updated.returncode == 0, updated.stderr
    with pytest.raises(as_alice.exceptions.ConditionalCheckFailedException):
        as_alice.put_item(TableName="E2eOrders", Item=item, ConditionExpression="attribute_not_exists(id)")
    transaction = json.dumps(
        [
            {
                "Update": {
                    "TableName": "E2eOrders",
                    "Key": {"id": {"S": "order-1"}},
                    "UpdateExpression": "SET paid = :p",
                    "ExpressionAttributeValues": {":p": {"BOOL": True}},
                }
            },
            {"Put": {"TableName": "E2eOrders", "Item": {"id": {"S": "order-2"}}}},
        ]
    )
    transacted = stack.aws_cli(bob, "dynamodb", "transact-write-items", "--transact-items", transaction)
    assert transacted.returncode == 0, transacted.stderr
    as_alice.get_item(TableName="E2eOrders", Key={"id": {"S": "order-1"}})
    deleted = stack.aws_cli(
        bob, "dynamodb", "delete-item", "--table-name", "E2eOrders", "--key", '{"id": {"S": "order-1"}}'
    )
    assert deleted.returncode == 0, deleted.stderr

    entries = stack.wait_for(lambda e: len(e) >= 6, table="E2eOrders", key=_key("order-1"))
    time.sleep(1.5)  # anything delivered twice would show up by now
    entries = stack.audit(table="E2eOrders", key=_key("order-1"))["entries"]
    calls = Counter(
        (e["principal_name"], e["event_name"], e["operation"], e["success"], e["error_code"]) for e in entries
    )
    assert calls == Counter(
        {
            ("e2e-alice", "PutItem", "Put", True, None): 1,
            ("e2e-bob", "UpdateItem", "Update", True, None): 1,
            ("e2e-alice", "PutItem", "Put", False, "ConditionalCheckFailedException"): 1,
            ("e2e-bob", "TransactWriteItems", "Update", True, None): 1,
            ("e2e-alice", "GetItem", "Get", True, None): 1,
            ("e2e-bob", "DeleteItem", "Delete", True, None): 1,
        }
    )
    assert {e["principal_type"] for e in entries} == {"IAMUser"}
    assert {e["principal_arn"] for e in entries} == {
        f"arn:aws:iam::{ACCOUNT}:user/e2e-alice",
        f"arn:aws:iam::{ACCOUNT}:user/e2e-bob",
    }
    assert {e["item_key"] for e in entries} == {'{"id":"order-1"}'}
    assert all(e["source_ip"] == "127.0.0.1" for e in entries)
    assert any(e["user_agent"].startswith("aws-cli/") for e in entries)
    (transacted_entry,) = [e for e in entries if e["event_name"] == "TransactWriteItems"]
    (second,) = stack.wait_for(lambda e: len(e) >= 1, table="E2eOrders", key=_key("order-2"))
    assert (second["event_id"], second["item_index"], second["operation"]) == (transacted_entry["event_id"], 1, "Put")
    assert transacted_entry["item_index"] == 0


def test_reads_are_audited_only_while_the_trail_includes_them(stack: Stack) -> None:
    stack.create_table("E2eReads")
    cloudtrail = stack.client("cloudtrail")
    every_call = cloudtrail.get_event_selectors(TrailName="deutzia-local")["AdvancedEventSelectors"]
    writes_only = [
        {
            "Name": "writes",
            "FieldSelectors": [*every_call[0]["FieldSelectors"], {"Field": "readOnly", "Equals": ["false"]}],
        }
    ]
    dynamodb = stack.client("dynamodb")
    key = {"id": {"S": "r-1"}}
    dynamodb.put_item(TableName="E2eReads", Item=key)
    dynamodb.get_item(TableName="E2eReads", Key=key)
    stack.wait_for(lambda e: {x["operation"] for x in e} == {"Put", "Get"}, table="E2eReads", key=_key("r-1"))
    cloudtrail.put_event_selectors(TrailName="deutzia-local", AdvancedEventSelectors=writes_only)
    try:
        dynamodb.get_item(TableName="E2eReads", Key=key)
        dynamodb.delete_item(TableName="E2eReads", Key=key)
        entries = stack.wait_for(lambda e: "Delete" in {x["operation"] for x in e}, table="E2eReads", key=_key("r-1"))
        # The stack audits reads: a check names the reads the trail now leaves out, on every table.
        today = settled_today()
        checked = stack.run(["make", "--no-print-directory", "reconcile", f"DATE={today}"], timeout=120)
        said = " ".join(checked.stdout.split())
        assert "the trail: the trail's event selectors do not log BatchExecuteStatement (reads), BatchGetItem," in said
        assert "TransactGetItems on every table (AUDITED_TABLES is *) for every caller" in said
    finally:
        cloudtrail.put_event_selectors(TrailName="deutzia-local", AdvancedEventSelectors=every_call)
    assert Counter(e["operation"] for e in entries) == Counter({"Put": 1, "Get": 1, "Delete": 1})


def test_an_unknown_access_key_is_recorded_with_its_key_id(stack: Stack) -> None:
    stack.create_table("E2eUnknown")
    stranger = stack.client("dynamodb", {"AccessKeyId": "AKIASTRANGER0000", "SecretAccessKey": "x"})
    stranger.put_item(TableName="E2eUnknown", Item={"id": {"S": "u-1"}})
    (entry,) = stack.wait_for(lambda e: len(e) == 1, table="E2eUnknown")
    assert (entry["principal_type"], entry["principal_id"], entry["access_key_id"], entry["account_id"]) == (
        "Unknown",
        "AKIASTRANGER0000",
        "AKIASTRANGER0000",
        ACCOUNT,
    )


TRAIL_KEY = re.compile(
    rf"^AWSLogs/{ACCOUNT}/CloudTrail/us-east-1/\d{{4}}/\d{{2}}/\d{{2}}/"
    rf"{ACCOUNT}_CloudTrail_us-east-1_\d{{8}}T\d{{4}}Z_[A-Za-z0-9]{{16}}\.json\.gz$"
)


def test_trail_bucket_holds_the_same_events_in_cloudtrails_layout(stack: Stack) -> None:
    stack.create_table("E2eTrail")
    dynamodb = stack.client("dynamodb")
    for n in range(3):
        dynamodb.put_item(TableName="E2eTrail", Item={"id": {"S": f"t-{n}"}})
    entries = stack.wait_for(lambda e: len(e) == 3, table="E2eTrail")
    wanted = {e["event_id"] for e in entries}
    s3 = stack.client("s3")
    deadline = time.monotonic() + 40
    while True:
        found: dict[str, dict[str, Any]] = {}
        for item in s3.list_objects_v2(Bucket="deutzia-trail").get("Contents", []):
            assert TRAIL_KEY.match(item["Key"]), item["Key"]
            body = s3.get_object(Bucket="deutzia-trail", Key=item["Key"])["Body"].read()
            found.update({r["eventID"]: r for r in json.loads(gzip.decompress(body))["Records"]})
        if wanted <= set(found) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert wanted <= set(found)
    record = found[next(iter(wanted))]
    assert (record["eventSource"], record["eventName"], record["eventCategory"]) == (
        "dynamodb.amazonaws.com",
        "PutItem",
        "Data",
    )


def test_glue_catalog_gets_the_partitions(stack: Stack) -> None:
    stack.create_table("E2eGlue")
    stack.client("dynamodb").put_item(TableName="E2eGlue", Item={"id": {"S": "g-1"}})
    stack.wait_for(lambda e: len(e) == 1, table="E2eGlue")
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    glue = stack.client("glue")
    deadline = time.monotonic() + 40
    while True:
        partitions = {
            tuple(p["Values"])
            for p in glue.get_partitions(DatabaseName="deutzia", TableName="audit_fresh")["Partitions"]
        }
        if ("E2eGlue", today) in partitions or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert ("E2eGlue", today) in partitions


def _raw_counts(stack: Stack, table: str) -> tuple[int, int]:
    query = f"select count(*) as records, count(distinct event_id) as events from audit where table_name = '{table}'"
    (row,) = stack.sql_rows(query)
    return int(row["records"]), int(row["events"])


def test_poller_killed_mid_stream_and_restarted_loses_and_repeats_nothing(stack: Stack) -> None:
    stack.create_table("E2eRestart")
    dynamodb = stack.client("dynamodb")
    total = 150

    def write() -> None:
        for n in range(total):
            dynamodb.put_item(TableName="E2eRestart", Item={"id": {"S": f"k-{n}"}})

    writer = threading.Thread(target=write)
    writer.start()
    stack.wait_for(lambda e: len(e) >= 10, table="E2eRestart")
    assert stack.poller is not None
    stack.poller.kill()
    time.sleep(1.0)
    stack.start_poller()
    writer.join()
    entries = stack.wait_for(lambda e: len(e) >= total, table="E2eRestart")
    assert sorted(e["item_key"] for e in entries) == sorted(_key(f"k-{n}").replace(" ", "") for n in range(total))
    records, events = _raw_counts(stack, "E2eRestart")
    assert (records >= total, events) == (True, total)  # a re-processed batch may store a row twice, shown once
    assert not [line for line in stack.poller.lines if "ingest batch" in line]  # quiet unless asked


def test_an_s3_outage_longer_than_the_retries_loses_nothing_once_replayed(stack: Stack) -> None:
    stack.create_table("E2eOutage")
    dynamodb = stack.client("dynamodb")
    stack.s3_outage("deutzia-audit", seconds=180)  # ended once the poller's ten retries have run out
    total = 60
    for n in range(total):
        dynamodb.put_item(TableName="E2eOutage", Item={"id": {"S": f"o-{n}"}})
    assert stack.poller is not None
    deadline = time.monotonic() + 120
    while not [line for line in stack.poller.lines if "gave up on" in line]:  # the retries ran out
        assert time.monotonic() < deadline, "\n".join(stack.poller.lines)
        time.sleep(0.2)
    stack.end_s3_outage()
    entries = stack.wait_for(lambda e: len(e) >= total, table="E2eOutage")
    assert sorted(e["item_key"] for e in entries) == sorted(f'{{"id":"o-{n}"}}' for n in range(total))
    records, events = _raw_counts(stack, "E2eOutage")
    assert (records >= total, events) == (True, total)
    replayed = stack.deutzia_local("replay")  # the stack already replayed it: the queue is empty
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert replayed.stdout.strip() == "replayed 0 failed batch(es); 0 still failing (left in the queue)"


def test_write_to_visible_latency(stack: Stack) -> None:
    stack.create_table("E2eLatency")
    dynamodb = stack.client("dynamodb")
    latencies = []
    for n in range(5):
        dynamodb.put_item(TableName="E2eLatency", Item={"id": {"S": f"l-{n}"}})
        returned = time.monotonic()
        stack.wait_for(lambda e, n=n: any(x["item_key"] == f'{{"id":"l-{n}"}}' for x in e), table="E2eLatency")
        latencies.append(time.monotonic() - returned)
    print(
        f"\nwrite-to-visible latency over {len(latencies)} puts: median {statistics.median(latencies):.2f} s, "
        f"max {max(latencies):.2f} s"
    )
    assert len(latencies) == 5


def test_an_assumed_role_session_is_recorded_with_the_role_behind_it(stack: Stack) -> None:
    stack.create_table("E2eRoles")
    role = stack.client("iam").create_role(RoleName="e2e-deployer", AssumeRolePolicyDocument="{}")["Role"]
    credentials = stack.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName="ci-run-42")["Credentials"]
    session = {"AccessKeyId": credentials["AccessKeyId"], "SecretAccessKey": credentials["SecretAccessKey"]}
    stack.client("dynamodb", session).delete_item(TableName="E2eRoles", Key={"id": {"S": "x"}})
    (entry,) = stack.wait_for(lambda e: len(e) == 1, table="E2eRoles")
    assert (entry["principal_type"], entry["principal_name"], entry["session_issuer_arn"]) == (
        "AssumedRole",
        "ci-run-42",
        role["Arn"],
    )
    assert entry["principal_arn"] == f"arn:aws:sts::{ACCOUNT}:assumed-role/e2e-deployer/ci-run-42"
    assert [e["event_id"] for e in stack.audit(table="E2eRoles", principal=role["Arn"])["entries"]] == [
        entry["event_id"]
    ]


def test_calls_in_another_region_reach_the_same_trail(stack: Stack) -> None:
    dublin = stack.client("dynamodb", region="eu-west-1")
    create_keyed_table(dublin, "E2eDublin")
    dublin.put_item(TableName="E2eDublin", Item={"id": {"S": "d-1"}})
    (entry,) = stack.wait_for(lambda e: len(e) == 1, table="E2eDublin")
    assert (entry["aws_region"], entry["table_arn"]) == (
        "eu-west-1",
        f"arn:aws:dynamodb:eu-west-1:{ACCOUNT}:table/E2eDublin",
    )


def test_the_demo_prints_the_items_history_and_commands_that_work(stack: Stack) -> None:
    result = stack.deutzia_local("demo", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("done: the audit trail: 6/6 calls visible") for line in lines)
    header = lines.index(next(line for line in lines if line.startswith("time ")))
    assert lines[header].split() == ["time", "who", "operation", "attributes", "result"]  # the key: the line above
    rows = [line.split() for line in lines[header + 2 : header + 8]]
    assert [(row[1], row[2]) for row in rows] == [
        ("bob", "Delete"),
        ("alice", "Get"),
        ("bob", "Update"),
        ("bob", "Update"),
        ("alice", "Update"),
        ("alice", "Put"),
    ]
    assert rows[3][-1] == "ConditionalCheckFailedException"
    # What each call named of the item: the update's expression with its names, the put's attributes.
    shown = lines[header + 2 : header + 8]
    assert "SET Year = :y; condition attribute_not_exists(AlbumTitle)" in shown[3]
    assert "SET AlbumTitle = :a" in shown[4]
    assert "Artist, SongTitle, AlbumTitle, Year" in shown[5]
    assert all(row[-1] == "ok" for i, row in enumerate(rows) if i != 3)
    (page_line,) = [line for line in lines if line.strip().startswith("open ")]
    asked = urllib.parse.parse_qs(urllib.parse.urlparse(page_line.split()[1]).query)
    assert asked == {"table": ["Music"], "key": [json.dumps(DEMO_KEY)], "follow": ["10"]}  # the item's page, following
    (put_line,) = [line for line in lines if "dynamodb put-item" in line]
    pasted = stack.run(put_line.strip())  # pasted into a shell, as a user would
    assert pasted.returncode == 0, pasted.stderr
    (sql_line,) = [line for line in lines if "make sql" in line]
    env = {name: value for name, value in stack.env.items() if not name.startswith("DEUTZIA_")}
    pasted = stack.run(sql_line.strip(), env=env)  # the line alone must find this stack
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert "principal_name" in pasted.stdout
    (history_line,) = [line for line in lines if "deutzia history" in line and "--key" in line]
    pasted = stack.run(history_line.strip(), env={**env, "COLUMNS": "200"})  # a terminal's width
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert "ConditionalCheckFailedException" in pasted.stdout
    assert f"DEUTZIA_API_PORT={stack.api_url.rsplit(':', 1)[1]}" in history_line
    (keyed_line,) = [line for line in lines if "deutzia history --table '*' --principal " in line]
    pasted = stack.run(keyed_line.split("   #")[0].strip(), env={**env, "COLUMNS": "200"})  # alice's key's calls
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    shown = [line.split("│") for line in pasted.stdout.splitlines() if line.startswith("│")]
    assert {cells[2].strip() for cells in shown} == {"Music"}  # every table's, with each line's table
    assert {cells[3].strip() for cells in shown} == {"alice"}  # the demo's calls by alice's key, and only those
    (ranged_line,) = [line for line in lines if "--source-ip 127.0.0.0/8 --since 1h" in line]
    pasted = stack.run(ranged_line.split("   #")[0].strip() + " --format json", env=env)  # the stack's latest calls
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert {entry["source_ip"] for entry in json.loads(pasted.stdout)} == {"127.0.0.1"}
    (compact_line,) = [line for line in lines if "make compact" in line]
    pasted = stack.run(compact_line.strip(), env=env)
    assert pasted.returncode == 0, pasted.stdout + pasted.stderr
    assert any(line.startswith("compacted ") for line in pasted.stdout.splitlines()), pasted.stdout


def test_make_sql_takes_any_quotes_prints_every_type_and_writes_no_file(stack: Stack, tmp_path: Any) -> None:
    stack.create_table("E2eSql")
    stack.client("dynamodb").put_item(TableName="E2eSql", Item={"id": {"S": 'it"s $HOME'}})
    stack.wait_for(lambda e: len(e) >= 1, table="E2eSql")
    env = {name: value for name, value in stack.env.items() if name != "DEUTZIA_API_PORT"}  # sql needs no API
    key = json.dumps({"id": 'it"s $HOME'}, separators=(",", ":"))
    query = f"select count(*) as n, now() is not null as now_ok from audit where item_key = '{key}'"
    result = stack.run(["make", "--no-print-directory", "sql", f"Q={query}"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [cell.strip() for cell in result.stdout.splitlines()[3].split("│")[1:-1]] == ["1", "True"]
    tiers = [f"select * from {tier} limit 0" for tier in ("audit_fresh", "audit_compacted")]
    fresh, compacted = (stack.run(["make", "--no-print-directory", "sql", f"Q={q}"], env=env) for q in tiers)
    fresh_columns, compacted_columns = (
        set(" ".join(result.stdout.split()).split("no rows; columns: ", 1)[1].split(", "))
        for result in (fresh, compacted)
    )  # as `deutzia sql` says it of no rows too wide for the terminal
    assert fresh_columns == compacted_columns - {"month"}
    assert "$path" not in fresh.stdout  # as Athena, which hides it from `select *`
    target = tmp_path / "leak.csv"
    copied = stack.run(["make", "--no-print-directory", "sql", f"Q=copy (select 1) to '{target}'"], env=env)
    assert copied.returncode != 0
    assert "disabled" in copied.stderr
    assert not target.exists()
    empty = stack.run(["make", "--no-print-directory", "sql"], env=env)
    assert empty.returncode != 0
    assert 'make sql Q="select ... from audit"' in empty.stderr


def test_the_api_answers_32_concurrent_requests_while_calls_are_ingested(stack: Stack) -> None:
    stack.create_table("E2eBusy")
    dynamodb = stack.client("dynamodb")
    for n in range(20):
        dynamodb.put_item(TableName="E2eBusy", Item={"id": {"S": f"b-{n}"}})
    stack.wait_for(lambda e: len(e) >= 20, table="E2eBusy")
    writing = threading.Thread(
        target=lambda: [dynamodb.put_item(TableName="E2eBusy", Item={"id": {"S": f"w-{n}"}}) for n in range(60)]
    )
    writing.start()

    def history(n: int) -> int:
        return len(stack.audit(table="E2eBusy", key=_key(f"b-{n % 20}"))["entries"])

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(32) as pool:
        counts = list(pool.map(history, range(96), timeout=120))
    writing.join()
    assert counts == [1] * 96


def test_make_compact_folds_the_fresh_tier_into_parquet_and_every_call_stays_once(stack: Stack) -> None:
    stack.create_table("E2eCompact")
    dynamodb = stack.client("dynamodb")
    total = 40
    for n in range(total):
        dynamodb.put_item(TableName="E2eCompact", Item={"id": {"S": f"c-{n % 10}"}, "n": {"N": str(n)}})
    before = stack.wait_for(lambda e: len(e) >= total, table="E2eCompact", limit="1000")
    # No grace (10 s on the local stack): what the run replaced is deleted at its end.
    result = stack.run(
        ["make", "--no-print-directory", "compact"], env={**stack.env, "COMPACTION_GRACE_SECONDS": "0.001"}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("compacted "), result.stdout
    assert "kept for queries still reading them: 0" in result.stdout
    s3 = stack.client("s3")
    listed = s3.list_objects_v2(Bucket="deutzia-audit", Prefix="compacted/table_name=E2eCompact/").get("Contents", [])
    assert [item["Key"].rsplit(".", 1)[1] for item in listed] == ["parquet"] * len(listed) != []
    fresh = s3.list_objects_v2(Bucket="deutzia-audit", Prefix="audit/table_name=E2eCompact/").get("Contents", [])
    assert fresh == []
    after = stack.audit(table="E2eCompact", limit="1000")["entries"]
    assert sorted(e["event_id"] for e in after) == sorted(e["event_id"] for e in before)
    history = stack.audit(table="E2eCompact", key=_key("c-3"))["entries"]
    assert len(history) == total // 10
    assert _raw_counts(stack, "E2eCompact") == (total, total)
