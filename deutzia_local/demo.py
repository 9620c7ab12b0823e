"""The demo: two IAM users put, update, fail a conditional write, transact, read and delete an item through the
local endpoint; the demo waits until every call shows in GET /audit, prints the item's history as a table, and the
commands to try next. Runs against a running stack (`make up`), or inside `make run`.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.errors import DeutziaError
from chalicelib.shown import attributes_text, operation_text, visible_text, who
from deutzia_local.settings import DEFAULT_API_PORT, DEFAULT_AWS_PORT, LocalSettings
from deutzia_local.stack import client, require_running

TABLE = "Music"
KEY = {"Artist": "No One You Know", "SongTitle": "Call Me Today"}
TYPED_KEY = {name: {"S": value} for name, value in KEY.items()}
ALICE_ARN = "arn:aws:iam::123456789012:user/alice"
WAIT_SECONDS = 60.0
SECONDS_BETWEEN_CALLS = 1.0


class DemoError(DeutziaError):
    """The demo could not run or its calls did not reach the audit trail in time."""


def run_demo(settings: LocalSettings, out: Callable[[str], None] = print) -> int:
    """Run the demo; 0 when every call showed up in the audit trail."""
    require_running(settings)
    _create_table(settings)
    users = {name: _user_keys(settings, name) for name in ("alice", "bob")}
    out(f"demo: alice and bob call DynamoDB table {TABLE} through {settings.aws_endpoint}")
    calls = _make_calls(settings, users)
    history = _wait_for(settings, [request_id for _, request_id in calls], out)
    out("")
    out(f"history of {json.dumps(KEY)} in {TABLE}, newest first (GET /audit):")
    columns = ["time", "who", "operation", "attributes", "result"]  # one item's: its key is in the line above
    out(format_table(columns, [_row(entry) for entry in history]))
    out("")
    out(_next_steps(settings, users["alice"]))
    return 0


def _create_table(settings: LocalSettings) -> None:
    dynamodb = client("dynamodb", settings)
    with contextlib.suppress(dynamodb.exceptions.ResourceInUseException):
        dynamodb.create_table(
            TableName=TABLE,
            AttributeDefinitions=[{"AttributeName": name, "AttributeType": "S"} for name in KEY],
            KeySchema=[
                {"AttributeName": "Artist", "KeyType": "HASH"},
                {"AttributeName": "SongTitle", "KeyType": "RANGE"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )


def _user_keys(settings: LocalSettings, name: str) -> dict[str, str]:
    """A fresh access key for IAM user `name` (created if needed), replacing earlier demo keys."""
    iam = client("iam", settings)
    try:
        iam.create_user(UserName=name)
    except iam.exceptions.EntityAlreadyExistsException:
        for key in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
            iam.delete_access_key(UserName=name, AccessKeyId=key["AccessKeyId"])
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}


def _as(settings: LocalSettings, keys: dict[str, str]) -> Any:
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=keys["AccessKeyId"],
        aws_secret_access_key=keys["SecretAccessKey"],
        region_name=settings.region,
    )
    return session.client("dynamodb", endpoint_url=settings.aws_endpoint)


def _make_calls(settings: LocalSettings, users: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """The demo's calls on the item, in order, as (what, request id)."""
    alice, bob = _as(settings, users["alice"]), _as(settings, users["bob"])
    calls: list[tuple[str, str]] = []

    def record(what: str, response: dict[str, Any]) -> None:
        calls.append((what, response["ResponseMetadata"]["RequestId"]))
        # CloudTrail times events to the second: a second apart, the history's order is the calls' order.
        time.sleep(SECONDS_BETWEEN_CALLS)

    item = {**TYPED_KEY, "AlbumTitle": {"S": "Somewhat Famous"}, "Year": {"N": "2015"}}
    record("alice puts the item", alice.put_item(TableName=TABLE, Item=item))
    record(
        "alice updates it",
        alice.update_item(
            TableName=TABLE,
            Key=TYPED_KEY,
            UpdateExpression="SET #a = :a",
            ExpressionAttributeNames={"#a": "AlbumTitle"},
            ExpressionAttributeValues={":a": {"S": "Louder Than Ever"}},
        ),
    )
    try:
        bob.update_item(
            TableName=TABLE,
            Key=TYPED_KEY,
            UpdateExpression="SET #y = :y",
            ConditionExpression="attribute_not_exists(#a)",
            ExpressionAttributeNames={"#y": "Year", "#a": "AlbumTitle"},
            ExpressionAttributeValues={":y": {"N": "1999"}},
        )
        raise DemoError("bob's conditional update should have failed")
    except ClientError as exc:
        record("bob's conditional update fails", dict(exc.response))
    tomorrow = {"Artist": {"S": KEY["Artist"]}, "SongTitle": {"S": "Call Me Tomorrow"}}
    record(
        "bob writes a transaction",
        bob.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": TYPED_KEY,
                        "UpdateExpression": "SET Plays = :p",
                        "ExpressionAttributeValues": {":p": {"N": "1"}},
                    }
                },
                {"Put": {"TableName": TABLE, "Item": {**tomorrow, "AlbumTitle": {"S": "Somewhat Famous"}}}},
            ]
        ),
    )
    record("alice reads it", alice.get_item(TableName=TABLE, Key=TYPED_KEY))
    record("bob deletes it", bob.delete_item(TableName=TABLE, Key=TYPED_KEY))
    return calls


def _audit(settings: LocalSettings) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"table": TABLE, "key": json.dumps(KEY), "limit": "1000"})
    with urllib.request.urlopen(f"{settings.api_url}/audit?{query}", timeout=30) as response:  # noqa: S310
        entries: list[dict[str, Any]] = json.loads(response.read())["entries"]
    return entries


def _wait_for(settings: LocalSettings, request_ids: list[str], out: Callable[[str], None]) -> list[dict[str, Any]]:
    """The item's history once every call shows in it, with a progress line while it waits."""
    started = time.monotonic()
    wanted = set(request_ids)
    interactive = sys.stdout.isatty()
    while True:
        entries = _audit(settings)
        seen = wanted & {entry["request_id"] for entry in entries}
        elapsed = time.monotonic() - started
        line = f"waiting for the audit trail: {len(seen)}/{len(wanted)} calls visible after {elapsed:.1f} s"
        if seen == wanted:
            out(("\r" if interactive else "") + line.replace("waiting for", "done:"))
            return [entry for entry in entries if entry["request_id"] in wanted]
        if elapsed > WAIT_SECONDS:
            raise DemoError(f"only {len(seen)} of {len(wanted)} calls reached GET /audit within {WAIT_SECONDS:g} s")
        if interactive:
            print("\r" + line, end="", flush=True)
        elif int(elapsed) != int(elapsed - 0.25):
            out(line)
        time.sleep(0.25)


def _row(entry: dict[str, Any]) -> list[str]:
    result = "ok" if entry["success"] else f"failed: {entry['error_code']}"
    return [entry["event_time"], who(entry), operation_text(entry), attributes_text(entry), result]


def _port_setting(settings: LocalSettings) -> str:
    """What `make sql` needs to find this stack: its AWS port, when it is not the default (`deutzia` needs the API's,
    DEUTZIA_API_PORT)."""
    return "" if settings.aws_port == DEFAULT_AWS_PORT else f"DEUTZIA_AWS_PORT={settings.aws_port} "


def _next_steps(settings: LocalSettings, alice: dict[str, str]) -> str:
    audit = f"curl -sG {settings.api_url}/audit --data-urlencode table={TABLE}"
    credentials = f"AWS_ACCESS_KEY_ID={alice['AccessKeyId']} AWS_SECRET_ACCESS_KEY={alice['SecretAccessKey']}"
    # The virtualenv's AWS CLI as a module: its `aws` script's `#!` line breaks where the clone's path holds a space.
    aws = f".venv/bin/python -m awscli --endpoint-url {settings.aws_endpoint} --region {settings.region}"
    item = json.dumps({**TYPED_KEY, "Rating": {"N": "5"}})
    sql = "select event_time, principal_name, operation, item_key, success from audit order by event_time desc limit 10"
    api_port = "" if settings.api_port == DEFAULT_API_PORT else f"DEUTZIA_API_PORT={settings.api_port} "
    page = {"table": TABLE, "key": json.dumps(KEY), "follow": 10}  # new calls appear as they come
    return "\n".join(
        [
            "try next:",
            f"  open {settings.api_url}/?{urllib.parse.urlencode(page)}"
            "   # the item's history page, following: the put-item below shows up there",
            f"  {api_port}.venv/bin/deutzia history --table {TABLE} --key {shlex.quote(json.dumps(KEY))}",
            f"  {audit} --data-urlencode {shlex.quote('key=' + json.dumps(KEY))}",
            f"  {credentials} {aws} dynamodb put-item --table-name {TABLE} --item {shlex.quote(item)}",
            f"  {audit} --data-urlencode principal={ALICE_ARN}",
            f"  {api_port}.venv/bin/deutzia history --table '*' --principal {alice['AccessKeyId']}"
            "   # everything alice's key did, on every table",
            f"  {api_port}.venv/bin/deutzia history --table '*' --source-ip 127.0.0.0/8 --since 1h"
            "   # every call from one range of addresses in the last hour",
            f"  {_port_setting(settings)}make sql Q={shlex.quote(sql)}",
            f"  {_port_setting(settings)}make compact   # fresh records into key-sorted Parquet "
            f"(the stack does it every {settings.compact_interval:g} s)",
        ]
    )


def format_table(columns: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell, with a rule under the header; every cell as text that cannot act on a
    terminal (`visible_text`)."""
    columns = [visible_text(column) for column in columns]
    rows = [[visible_text(cell) for cell in row] for row in rows]
    widths = [max([len(column)] + [len(row[i]) for row in rows]) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
