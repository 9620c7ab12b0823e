"""The item-history page in a real headless Chromium (Debian's `chromium`, driven by Playwright), served by the
local stack's API at `/`: search an item, see its entries newest first and whether the table's history is complete
over those days (days with calls missing named in red), see what each call named of the item's attributes (as
`deutzia history` shows it), open an entry's details, load more, download them as CSV (a caller's formula-like user
agent made inert) and the whole history too (bounded), follow a shared link (on a phone too), and a key holding
`<script>` stays text. A screenshot is kept as out/ui-history.png. Skipped only where no Chromium is found."""

from __future__ import annotations

import csv
import functools
import io
import json
import re
import shutil
import urllib.parse
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from chalicelib.shown import attributes_text, visible_text, who
from deutzia_cli.api import Target
from deutzia_cli.main import CSV_COLUMNS, RESTORED_NOTE, UNCONFIRMED_NOTE, coverage_line
from deutzia_cli.ui import serve
from tests.e2e.conftest import ROOT, Stack
from tests.factories import INCOMPLETE_COVERAGE, TABLE_NOTES

TABLE = "E2ePage"
HOSTILE = "<script>window.pwned=1</script><img src=x onerror=window.pwned=1>"
REORDERED = "invoice\u202egpj.exe\x1b[2K"  # a bidi override shows `invoice` + `exe.jpg`
FORMULA = '=HYPERLINK("https://example.com/?"&A1,"open")'


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium found: install Debian's `chromium` package (apt-get install chromium); .ci/run does")


_SESSION = {
    "event_id": "a954451c-c2fc-4561-8aea-7a30ba1fdf52",
    "item_index": 0,
    "event_time": "2026-11-28T09:36:58Z",
    "event_name": "PutItem",
    "operation": "Put",
    "item_key": '{"id":"page-1"}',
    "attribute_names": ["id"],
    "success": True,
    "principal_type": "AssumedRole",
    "principal_name": "bob",
    "principal_arn": "arn:aws:sts::111122223333:assumed-role/admin-role/bob",
    "session_issuer_arn": "arn:aws:iam::444455556666:role/admin-role",
    "source_ip": "192.0.2.0",
    "table_name": TABLE,
}
# Calls whose lines name attributes each way the page and `deutzia history` must show alike.
_NAMES = {"#r": "Rating", "#p": "play count", "#h": "<b>x</b>", "#n": 7}
_NAMING = [
    {"operation": "Update", "event_name": "UpdateItem",
     "update_expression": "SET #r = :r, #p = #p + :one REMOVE #h ADD #gone :g",
     "request_parameters": json.dumps({"expressionAttributeNames": _NAMES, "key": {"id": "page-1"}}),
     "attribute_names": ["Rating", "play count", "<b>x</b>", "7"]},
    {"operation": "Update", "event_name": "UpdateItem", "update_expression": "SET #r = :r, #n = :n",
     "request_parameters": json.dumps({"ExpressionAttributeNames": _NAMES})},
    {"operation": "Update", "event_name": "UpdateItem", "update_expression": "SET #r = :r",
     "request_parameters": '{"expressionAttributeNames":{"#r":"Rat'},
    {"operation": "Put", "attribute_names": ["id", "Song Title", "x = 1, y", "invoice\u202egpj.exe", "\U0001f3b5" * 3]},
    {"operation": "Put", "attribute_names": [f"attribute-{n}" for n in range(40)]},
    {"operation": "Put", "attribute_names": ["\U0001f3b5" * 250]},
    {"operation": "Statement", "event_name": "ExecuteStatement", "statement": "UPDATE t SET a=***(Redacted)"},
    {"operation": "Delete", "event_name": "DeleteItem", "condition_expression": "attribute_exists(#r)"},
    {"operation": "Update", "event_name": "UpdateItem", "update_expression": "SET #r = :r", "success": False,
     "error_code": "ConditionalCheckFailedException", "condition_expression": "attribute_not_exists(#h) AND #n < :n",
     "request_parameters": json.dumps({"expressionAttributeNames": _NAMES})},
    {"operation": "Get", "event_name": "GetItem", "condition_expression": "x"},
]  # fmt: skip
_STATUSES = "verified complete|complete after backfill|incomplete|without trail files|not checked yet"


def _fulfil(answer: object, route: Any) -> None:
    route.fulfill(json=answer)


def _wait_for_entries(page: Any, count: int) -> None:
    page.locator("#history tr.entry").nth(count - 1).wait_for()


def test_the_page_searches_pages_shares_and_escapes(stack: Stack) -> None:
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    stack.create_table(TABLE)
    dynamodb = stack.client("dynamodb")
    # Time to Live deletes items with no call: the line says so, from what the stack's DynamoDB says of the table.
    dynamodb.update_time_to_live(TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})
    for n in range(4):
        dynamodb.put_item(TableName=TABLE, Item={"id": {"S": "page-1"}, "n": {"N": str(n)}})
    # A caller picks its own user agent: as a CSV cell it must not become a formula.
    formula = boto3.session.Session(aws_access_key_id="deutzia-e2e-admin", aws_secret_access_key="x").client(
        "dynamodb", region_name="us-east-1", endpoint_url=stack.aws_endpoint, config=Config(user_agent=FORMULA)
    )
    formula.put_item(TableName=TABLE, Item={"id": {"S": "page-1"}, "n": {"N": "4"}})
    dynamodb.put_item(TableName=TABLE, Item={"id": {"S": HOSTILE}})
    dynamodb.put_item(TableName=TABLE, Item={"id": {"S": REORDERED}})
    entries = stack.wait_for(lambda found: len(found) >= 5, table=TABLE, key='{"id": "page-1"}')
    reordered_key = json.dumps({"id": REORDERED})
    stack.wait_for(lambda found: len(found) == 1, table=TABLE, key=reordered_key)
    (formula_entry,) = [entry for entry in entries if entry["user_agent"].startswith(FORMULA)]  # botocore adds its name
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            # Nothing the page asks for fails, its icon included (inline: /favicon.ico is no route, API Gateway's 403).
            complaints: list[str] = []
            page.on("console", lambda message: complaints.append(message.text) if message.type == "error" else None)
            page.on("response", lambda answer: complaints.append(answer.url) if answer.status >= 400 else None)
            page.goto(f"{stack.api_url}/?limit=3")
            page.wait_for_selector(f"#table option[value='{TABLE}']", state="attached")
            page.select_option("#table", TABLE)
            page.fill("#key", '{"id": "page-1"}')
            page.click("#go")
            _wait_for_entries(page, 3)
            times = page.locator("#history tr.entry td.time").all_text_contents()
            # Whether the table's history is complete, day by day: the API's 30 days up to today, each counted once.
            page.locator("#coverage", has_text="Checked against").wait_for()
            coverage = page.locator("#coverage").text_content() or ""
            today = datetime.now(UTC).date()
            assert coverage.startswith(
                f"Checked against CloudTrail's own files, {today - timedelta(days=29)} to {today}:"
            )
            counted = re.findall(rf"(\d+) days? ({_STATUSES})", coverage)
            assert sum(int(count) for count, _ in counted) == 30
            assert coverage.endswith(
                f" The table: DynamoDB's Time to Live deletes items of {TABLE} once the time in ttl has passed, by "
                "itself: no call makes those deletions, so no trail logs them, and an item's history can end without "
                "its Delete."
            )
            assert "created at" not in coverage  # no entry shown is of an earlier table of its name
            assert times == [entry["event_time"] for entry in entries[:3]]
            # One item's history: its key is in the form, not repeated on every line.
            assert page.locator("#history th.key").is_hidden()
            assert page.locator("#history tr.entry td.key").first.is_hidden()
            page.click("#more")
            _wait_for_entries(page, 5)
            assert page.locator("#more").is_hidden()
            assert page.locator("#status").text_content() == "5 entries"
            # An entry's details: everything the record holds, shown on demand.
            details = page.locator("#history tr.details").first
            assert details.is_hidden()
            page.locator("#history tr.entry button.toggle").first.click()
            assert details.is_visible()
            shown_details = details.text_content() or ""
            for value in (entries[0]["principal_id"], entries[0]["user_agent"], entries[0]["event_id"], "id, n"):
                assert value in shown_details
            assert entries[0]["request_parameters"] in shown_details  # as stored, numbers never re-read
            page.locator("#history tr.entry button.toggle").first.click()
            assert details.is_hidden()
            with page.expect_download() as download:
                page.click("#csv")
            rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
            assert [row["event_id"] for row in rows] == [entry["event_id"] for entry in entries]
            by_id = {row["event_id"]: row for row in rows}
            assert by_id[formula_entry["event_id"]]["user_agent"] == "'" + formula_entry["user_agent"]
            assert {row["item_key"] for row in rows} == {'{"id":"page-1"}'}
            assert tuple(rows[0]) == CSV_COLUMNS  # every column, as `deutzia history --format csv` writes them
            assert {(row["attribute_names"], row["success"], row["table_name"]) for row in rows} == {
                ('["id","n"]', "true", TABLE)
            }
            shared = page.url
            assert complaints == []
            assert urllib.parse.parse_qs(urllib.parse.urlparse(shared).query)["table"] == [TABLE]
            Path(ROOT / "out").mkdir(exist_ok=True)
            page.screenshot(path=str(ROOT / "out" / "ui-history.png"), full_page=True)

            again = browser.new_page()
            again.goto(shared)
            _wait_for_entries(again, 3)
            assert again.input_value("#key") == '{"id": "page-1"}'
            # The whole history as CSV, page after page, while the table keeps the 3 it shows.
            with again.expect_download() as download:
                again.click("#csv-all")
            everything = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
            assert [row["event_id"] for row in everything] == [entry["event_id"] for entry in entries]
            assert again.locator("#status").text_content() == "downloaded all 5 entries"
            assert again.locator("#history tr.entry").count() == 3
            # However long the history, a download stops at 50,000 entries and says so.
            endless = browser.new_page()
            endless.route(
                lambda url: urllib.parse.urlparse(url).path.endswith("/audit"),
                lambda route: route.fulfill(
                    json={"table": TABLE, "key": None, "entries": [_SESSION] * 1000, "next_token": "more"}
                ),
            )
            endless.goto(shared)
            _wait_for_entries(endless, 1)
            with endless.expect_download(timeout=120_000) as download:
                endless.click("#csv-all")
            with open(download.value.path(), encoding="utf-8") as written:
                assert sum(1 for _ in written) == 1 + 50_000
            assert endless.locator("#status").text_content() == (
                "downloaded the first 50000 entries; narrow the time range for the rest"
            )
            # Days with calls still missing are named, in red; a range past 366 days shows its last 366.
            missing = browser.new_page()
            asked: list[str] = []

            def fake_coverage(route: Any) -> None:
                asked.append(route.request.url)
                route.fulfill(json=INCOMPLETE_COVERAGE)

            missing.route("**/audit/coverage?*", fake_coverage)
            tomorrow = today + timedelta(days=1)  # an until past every entry, at whatever time of day the test runs
            missing.goto(shared + f"&since=2020-01-01&until={tomorrow}T01:00:00Z")
            _wait_for_entries(missing, 1)
            missing.locator("#coverage", has_text="Checked against").wait_for()
            shown_coverage = missing.locator("#coverage").text_content() or ""
            assert shown_coverage == coverage_line(INCOMPLETE_COVERAGE, True)[0]  # as `deutzia history` says it
            assert (  # a day the trail did not log, then one with calls the next daily runs will backfill
                "Calls still missing on 2026-11-25 (the trail did not log from 2026-11-25T01:00:00Z to "
                "2026-11-25T04:00:00Z), 2026-11-26 (3 missing, 2 to be backfilled by the next daily runs)."
                in shown_coverage
            )
            assert missing.locator("#coverage").get_attribute("class") == "error"
            # When the table was created again is said once an entry shown is older (loading more can make it so).
            split = browser.new_page()
            noted = {**INCOMPLETE_COVERAGE, "table_notes": TABLE_NOTES}
            split.route("**/audit/coverage?*", lambda route: route.fulfill(json=noted))
            created = TABLE_NOTES[1]["time"]
            newer = [{**_SESSION, "event_id": f"c0ffee00-0000-4000-8000-00000000000{n}",
                      "event_time": f"{created[:-3]}0{n}Z"} for n in (3, 2, 1)]  # fmt: skip  # a page: 3
            older = {**_SESSION, "event_id": "c0ffee00-0000-4000-8000-000000000009",
                     "event_time": "2026-11-24T08:00:00Z"}  # fmt: skip

            def entries_page(route: Any) -> None:
                token = urllib.parse.parse_qs(urllib.parse.urlparse(route.request.url).query).get("next_token")
                entries = [older] if token else newer
                answer = {"table": TABLE, "key": None, "entries": entries, "next_token": None if token else "t"}
                route.fulfill(json=answer)

            split.route(lambda url: urllib.parse.urlparse(url).path.endswith("/audit"), entries_page)
            split.goto(shared)
            _wait_for_entries(split, 3)
            split.locator("#coverage", has_text="The table:").wait_for()
            assert split.locator("#coverage").text_content() == coverage_line(noted, False, newer[-1]["event_time"])[0]
            assert "created at" not in (split.locator("#coverage").text_content() or "")
            assert split.locator("#history tr.earlier").count() == 0
            split.click("#more")
            _wait_for_entries(split, 4)
            # Where the history reaches back before the table was created, a row says so, above the older entries.
            split.locator("#history tr.earlier").wait_for()
            assert split.locator("#history tr.earlier").text_content() == TABLE_NOTES[1]["text"] + "."
            after = split.locator("#history tr.earlier + tr.entry td.time").text_content()
            assert after == older["event_time"]
            assert split.locator("#coverage").text_content() == coverage_line(noted, False, older["event_time"])[0]
            assert f"created at {created}" in (split.locator("#coverage").text_content() or "")
            # With no entry shown, it is said after a day whose calls the trail holds, as the command says it.
            empty = browser.new_page()
            uncalled = {
                **noted,
                "days": [{k: v for k, v in day.items() if k != "trail_events"} for day in noted["days"]],
            }
            for answer, said in ((noted, True), (uncalled, False)):
                empty.route("**/audit/coverage?*", functools.partial(_fulfil, answer))
                empty.route(
                    lambda url: urllib.parse.urlparse(url).path.endswith("/audit"),
                    lambda route: route.fulfill(json={"table": TABLE, "key": None, "entries": [], "next_token": None}),
                )
                empty.goto(shared)
                empty.locator("#coverage", has_text="The table:").wait_for()
                assert empty.locator("#coverage").text_content() == coverage_line(answer, False)[0]
                assert ("created at" in (empty.locator("#coverage").text_content() or "")) is said
                empty.unroute("**/audit/coverage?*")
            (request,) = [urllib.parse.parse_qs(urllib.parse.urlparse(url).query) for url in asked]
            end = tomorrow + timedelta(days=1)  # until's day is included
            assert (request["since"], request["until"]) == ([str(end - timedelta(days=366))], [str(end)])
            # Without a key, the table's calls of its last 7 days, unless Since says otherwise; a key typed next
            # searches the item's whole history, as the form and the link hold no default.
            recent = browser.new_page()
            heard: list[str] = []
            recent.on("request", lambda request: heard.append(request.url))
            recent.goto(f"{stack.api_url}/?table={TABLE}")
            _wait_for_entries(recent, 1)
            week = today - timedelta(days=6)
            assert recent.locator("#status").text_content() == (
                f"{recent.locator('#history tr.entry').count()} entries since {week} (set Since for earlier ones)"
            )
            asked = [urllib.parse.parse_qs(urllib.parse.urlparse(url).query) for url in heard if "/audit?" in url]
            assert asked[0]["since"] == [str(week)]
            assert recent.locator("#since").input_value() == ""
            assert recent.locator("#history tr.entry td.key").first.is_visible()  # a table's calls: each its key
            assert "since" not in urllib.parse.parse_qs(urllib.parse.urlparse(recent.url).query)
            recent.fill("#key", '{"id": "page-1"}')
            recent.click("#go")
            recent.locator("#status", has_text="5 entries").wait_for()
            asked = [urllib.parse.parse_qs(urllib.parse.urlparse(url).query) for url in heard if "/audit?" in url]
            assert "since" not in asked[-1]
            # A session is named with the role it was assumed from, as `deutzia history` names it.
            session = browser.new_page()
            other = {**_SESSION, "event_id": "0b1c2d3e-0000-4000-8000-000000000000", "principal_name": "alice"}
            session.route(
                lambda url: urllib.parse.urlparse(url).path.endswith("/audit"),
                lambda route: route.fulfill(
                    json={"table": TABLE, "key": None, "entries": [_SESSION, other], "next_token": None}
                ),
            )
            # A record reconciliation found the trail's files lack or contradict is marked, as `deutzia history` does,
            # and so is one it restored from them (a copy that contradicted them was replaced).
            unconfirmed_day = {"day": "2026-11-28", "status": "unconfirmed", "trail_events": 2, "backfilled": 0,
                               "still_missing": 0, "not_in_trail": 0, "altered": 1,
                               "unconfirmed_ids": [_SESSION["event_id"]],
                               "restored_ids": [other["event_id"]]}  # fmt: skip
            session.route(
                "**/audit/coverage?*",
                lambda route: route.fulfill(
                    json={"table": TABLE, "since": "2026-11-28", "until": "2026-11-28", "days": [unconfirmed_day]}
                ),
            )
            session.goto(shared)
            _wait_for_entries(session, 2)
            assert session.locator("#history tr.entry td.who").first.text_content() == who(_SESSION)
            assert who(_SESSION) == "bob (admin-role)"
            session.locator("#history tr.entry.unconfirmed").wait_for()
            marked = session.locator("#history tr.entry.unconfirmed")
            assert marked.count() == 1
            assert marked.locator("td.who").text_content() == "bob (admin-role)"
            assert marked.locator(".unconfirmed-note").text_content() == UNCONFIRMED_NOTE
            restored = session.locator("#history tr.entry.restored")
            assert restored.count() == 1
            assert restored.locator("td.who").text_content() == "alice (admin-role)"
            assert restored.locator(".restored-note").text_content() == RESTORED_NOTE
            assert "Records CloudTrail's own files lack or contradict on 2026-11-28 (1)." in (
                session.locator("#coverage").text_content() or ""
            )
            # Each line shows what its call named of the item's attributes, as `deutzia history` shows it.
            named = browser.new_page()
            lines = [{**_SESSION, "event_id": f"0b1c2d3e-0000-4000-8000-00000000000{n}", **fields}
                     for n, fields in enumerate(_NAMING)]  # fmt: skip
            named.route(
                lambda url: urllib.parse.urlparse(url).path.endswith("/audit"),
                lambda route: route.fulfill(json={"table": TABLE, "key": None, "entries": lines, "next_token": None}),
            )
            named.goto(shared.replace("limit=3", f"limit={len(lines)}"))  # one page of them all
            _wait_for_entries(named, len(lines))
            headings = named.locator("#history th").all_text_contents()
            assert headings[headings.index("Key") + 1] == "Attributes"
            assert named.locator("#history tr.entry td.attributes").all_text_contents() == [
                visible_text(attributes_text(line)) for line in lines
            ]
            assert named.locator("#history tr.entry td.attributes").first.text_content() == (
                'SET Rating = :r, "play count" = "play count" + :one REMOVE "<b>x</b>" ADD #gone :g'
            )
            assert named.evaluate("window.pwned") is None
            assert named.locator("#history b").count() == 0
            # A request the API refuses for its rate is sent again after a while.
            throttled = browser.new_page()
            refusals: list[str] = []

            def refuse_once(route: Any) -> None:
                if not refusals:
                    refusals.append(route.request.url)
                    route.fulfill(status=429, json={"message": "Too Many Requests"})
                else:
                    route.continue_()

            throttled.route(lambda url: urllib.parse.urlparse(url).path.endswith("/audit"), refuse_once)
            throttled.goto(shared)
            _wait_for_entries(throttled, 3)
            assert len(refusals) == 1
            # Times are UTC, as stored; a reader elsewhere sees their own on hover.
            tokyo = browser.new_context(timezone_id="Asia/Tokyo", locale="en-US").new_page()
            tokyo.goto(shared)
            _wait_for_entries(tokyo, 3)
            first = tokyo.locator("#history tr.entry td.time").first
            utc = datetime.strptime(first.text_content() or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            there = utc.astimezone(timezone(timedelta(hours=9)))
            assert first.get_attribute("title") == f"{there:%-m/%-d/%Y, %-I:%M:%S %p} GMT+9"
            narrow = browser.new_page(viewport={"width": 390, "height": 800})  # a phone: one entry a block
            narrow.goto(shared)
            _wait_for_entries(narrow, 3)
            assert narrow.locator("#history tr.details").first.is_hidden()
            narrow.locator("#history tr.entry button.toggle").first.click()
            assert narrow.locator("#history tr.details").first.is_visible()

            hostile = browser.new_page()
            hostile.goto(
                f"{stack.api_url}/?" + urllib.parse.urlencode({"table": TABLE, "key": f'{{"id": "{HOSTILE}"}}'})
            )
            _wait_for_entries(hostile, 1)
            assert HOSTILE in (hostile.locator("#history tr.entry td.key").text_content() or "")
            hostile.locator("#history tr.entry button.toggle").first.click()
            assert HOSTILE in (hostile.locator("#history tr.details").first.text_content() or "")
            assert hostile.evaluate("window.pwned") is None
            assert hostile.locator("#history script, #history img").count() == 0
            hostile.goto(f"{stack.api_url}/?" + urllib.parse.urlencode({"table": TABLE, "key": reordered_key}))
            _wait_for_entries(hostile, 1)
            shown = hostile.locator("#history tr.entry td.key").text_content() or ""
            assert shown == '{"id":"invoice\\u202egpj.exe\\u001b[2K"}'  # shown, not obeyed

            proxy = serve(Target(stack.api_url))  # `deutzia ui`, here in front of the local stack
            try:
                through = browser.new_page()
                through.goto(f"http://127.0.0.1:{proxy.server_port}/?" + urllib.parse.urlparse(shared).query)
                _wait_for_entries(through, 3)
                assert through.locator("#history tr.entry td.time").all_text_contents() == times
                through.locator("#coverage", has_text="Checked against").wait_for()  # forwarded and signed too
            finally:
                proxy.shutdown()
                proxy.server_close()
        finally:
            browser.close()


def test_every_tables_history_on_one_page_a_leaked_keys_calls(stack: Stack) -> None:
    """Table "every audited table": each table's history merged newest first, a page at a time, with each table's
    coverage line; `deutzia history --table '*'` shows the same."""
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    leaked = "AKIAE2EPAGELEAKED001"
    tables = ["E2ePageLeakA", "E2ePageLeakB"]
    for table in tables:
        stack.create_table(table)
    thief = stack.client("dynamodb", {"AccessKeyId": leaked, "SecretAccessKey": "x"})
    for n in range(2):
        for table in tables:
            thief.put_item(TableName=table, Item={"id": {"S": f"stolen-{n}"}})
            stack.client("dynamodb").put_item(TableName=table, Item={"id": {"S": f"kept-{n}"}})
    stolen = []
    for table in tables:
        stolen += stack.wait_for(lambda found: len(found) == 2, table=table, principal=leaked)
    expected = sorted(stolen, key=lambda entry: str(entry["event_time"]), reverse=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"{stack.api_url}/?" + urllib.parse.urlencode({"table": "*", "principal": leaked, "limit": 3}))
            _wait_for_entries(page, 3)
            assert (page.locator("#table option[value='*']").text_content() or "").startswith("every audited table (")
            assert page.locator("#history th.table-name").is_visible()
            shown = page.locator("#history tr.entry td.table-name").all_text_contents()
            assert shown == [entry["table_name"] for entry in expected[:3]]
            assert (page.locator("#status").text_content() or "").startswith("3 entries so far since ")
            page.click("#more")
            _wait_for_entries(page, 4)
            assert page.locator("#more").is_hidden()
            assert page.locator("#history tr.entry td.time").all_text_contents() == [e["event_time"] for e in expected]
            lines = page.locator("#coverage p")
            page.locator("#coverage p", has_text="Checked against").nth(1).wait_for()
            said = sorted(lines.all_text_contents())
            assert [line.split(": ")[0] for line in said] == tables
            assert all(": Checked against CloudTrail's own files" in line for line in said)
            with page.expect_download() as download:
                page.click("#csv")
            with open(download.value.path(), encoding="utf-8") as written:
                rows = list(csv.DictReader(written))
            assert [(row["table_name"], row["access_key_id"]) for row in rows] == [
                (entry["table_name"], leaked) for entry in expected
            ]
            # Only the calls that worked: all of them here; none failed with AccessDenied.
            heard: list[str] = []
            page.on("request", lambda request: heard.append(request.url))
            page.fill("#result", "ok")
            page.click("#go")
            page.locator("#status", has_text="3 entries so far").wait_for()  # a page of 3, as the link asks
            assert "result=ok" in page.url
            assert all("result=ok" in url for url in heard if "/audit?" in url)
            page.fill("#result", "AccessDenied")
            page.click("#go")
            page.locator("#status", has_text="0 entries").wait_for()
            # One table's page keeps its columns: no table on each line.
            page.goto(f"{stack.api_url}/?" + urllib.parse.urlencode({"table": tables[0], "principal": leaked}))
            _wait_for_entries(page, 2)
            assert page.locator("#history th.table-name").is_hidden()
            # From one call of one table, further: its item's history, and everything its key did on every table.
            page.goto(f"{stack.api_url}/?" + urllib.parse.urlencode({"table": tables[0]}))
            _wait_for_entries(page, 4)
            page.locator("#history tr.entry", has_text="stolen-1").get_by_role("button", name="details").click()
            further = page.locator("#history tr.details:not([hidden]) dd.further a")
            links = {
                link.text_content(): urllib.parse.parse_qs(urllib.parse.urlparse(link.get_attribute("href")).query)
                for link in further.all()
            }
            around = links.pop("every call within 5 minutes, on every table")
            (stolen_at,) = [
                e["event_time"] for e in stolen if e["table_name"] == tables[0] and "stolen-1" in e["item_key"]
            ]
            at = datetime.strptime(str(stolen_at), "%Y-%m-%dT%H:%M:%SZ")
            assert around == {
                "table": ["*"],
                "since": [(at - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")],
                "until": [(at + timedelta(minutes=5, seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")],
            }  # the call's own second included
            assert links == {
                "this item's history": {"table": [tables[0]], "key": ['{"id":"stolen-1"}']},
                "this access key's calls on every table": {"table": ["*"], "principal": [leaked]},
                "the calls from this address on every table": {"table": ["*"], "source_ip": ["127.0.0.1"]},
            }  # no caller's ARN: a key the stack does not know is recorded by its id alone
            further.filter(has_text="this access key's calls").click()
            _wait_for_entries(page, 4)
            assert page.locator("#history tr.entry td.time").all_text_contents() == [e["event_time"] for e in expected]
            assert page.locator("#principal").input_value() == leaked
        finally:
            browser.close()


def test_the_form_and_the_entries_fit_the_screen_they_are_read_on(stack: Stack) -> None:
    """On a laptop the form takes two rows, the key the widest field; on a phone an entry is a block of labelled
    lines, none of them empty (a Get or a Delete names no attributes)."""
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    table = "E2ePageLayout"
    stack.create_table(table)
    dynamodb = stack.client("dynamodb")
    dynamodb.put_item(TableName=table, Item={"id": {"S": "l-1"}, "n": {"N": "1"}})
    dynamodb.get_item(TableName=table, Key={"id": {"S": "l-1"}})
    dynamodb.delete_item(TableName=table, Key={"id": {"S": "l-1"}})
    stack.wait_for(lambda found: len(found) == 3, table=table, key='{"id": "l-1"}')
    link = f"{stack.api_url}/?" + urllib.parse.urlencode({"table": table, "key": '{"id": "l-1"}'})
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            wide = browser.new_page(viewport={"width": 1280, "height": 900})
            wide.goto(link)
            _wait_for_entries(wide, 3)
            boxes = {
                name: wide.locator(f"#{name}").bounding_box()
                for name in ("table", "key", "since", "until", "principal", "operation", "result", "go")
            }
            assert len({round(box["y"] + box["height"]) for box in boxes.values() if box}) == 2  # two rows, aligned
            key, since = boxes["key"], boxes["since"]
            assert key is not None
            assert since is not None
            assert key["width"] > 2 * since["width"]
            narrow = browser.new_page(viewport={"width": 390, "height": 800})
            narrow.goto(link)
            _wait_for_entries(narrow, 3)
            cells = narrow.locator("#history tr.entry td[data-label]")
            shown = [cells.nth(n) for n in range(cells.count()) if cells.nth(n).is_visible()]
            assert {cell.get_attribute("data-label") for cell in shown} >= {"Time", "Who", "Operation", "Result"}
            assert all((cell.text_content() or "").strip() for cell in shown)
            assert len(shown) < cells.count()  # the Get's and the Delete's attributes, at least
            # Where the calls came from: all three from the stack's own address, none from another.
            for address, count in (("198.51.100.1", 0), ("127.0.0.1", 3), ("198.51.100.0/24", 0), ("127.0.0.0/8", 3)):
                wide.fill("#source_ip", address)
                wide.click("#go")
                wide.locator("#status", has_text=f"{count} entries").wait_for()
                assert urllib.parse.urlencode({"source_ip": address}) in wide.url
            # Since as a span back from now, as `deutzia --since 2h`: asked as a UTC time, kept as typed in the link.
            heard: list[str] = []
            wide.on("request", lambda request: heard.append(request.url))
            wide.fill("#since", "2h")
            wide.click("#go")
            wide.locator("#status", has_text="3 entries").wait_for()
            assert "since=2h" in wide.url
            asked = [urllib.parse.parse_qs(urllib.parse.urlparse(url).query) for url in heard if "/audit?" in url]
            assert asked
            assert all(
                re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", q["since"][0]) for q in asked
            )
            wide.fill("#since", "0s")  # now: no call yet
            wide.click("#go")
            wide.locator("#status", has_text="0 entries").wait_for()
        finally:
            browser.close()


def test_following_shows_each_new_call_once_at_the_top_until_turned_off(stack: Stack) -> None:
    """Follow new calls (`follow=<seconds>` in a link), as `deutzia history --follow`: each call that reaches the audit
    after the page opened appears at the top, once, however many reads see it; none after Follow is turned off."""
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    table, key = "E2ePageFollow", {"id": {"S": "f-1"}}
    stack.create_table(table)
    dynamodb = stack.client("dynamodb")
    dynamodb.put_item(TableName=table, Item={**key, "n": {"N": "0"}})
    stack.wait_for(lambda found: len(found) == 1, table=table, key='{"id": "f-1"}')
    shown = {"table": table, "key": '{"id": "f-1"}'}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            complaints: list[str] = []
            page.on("console", lambda message: complaints.append(message.text) if message.type == "error" else None)
            page.goto(f"{stack.api_url}/?" + urllib.parse.urlencode({**shown, "follow": "2"}))
            page.locator("#status", has_text="following").wait_for()
            assert page.locator("#follow").is_checked()
            assert page.locator("#history tr.entry.new").count() == 0  # what was there is not new
            for n in (1, 2):
                dynamodb.update_item(
                    TableName=table,
                    Key=key,
                    UpdateExpression="SET n = :n",
                    ExpressionAttributeValues={":n": {"N": str(n)}},
                )
            page.locator("#history tr.entry.new").nth(1).wait_for()
            page.wait_for_timeout(5000)  # two reads more, which see the same calls again
            rows = page.locator("#history tr.entry")
            assert rows.count() == 3
            assert page.locator("#history tr.entry.new").count() == 2
            times = rows.locator("td.time").all_text_contents()
            assert times == sorted(times, reverse=True)  # newest at the top
            assert (page.locator("#status").text_content() or "").startswith("3 entries; following: ")
            assert "follow=2" in page.url  # a link to the page follows too

            page.uncheck("#follow")
            page.locator("#status", has_text="following").wait_for(state="detached")  # it says it stopped
            assert "follow=" not in page.url
            dynamodb.delete_item(TableName=table, Key=key)
            stack.wait_for(lambda found: len(found) == 4, table=table, key='{"id": "f-1"}')
            page.wait_for_timeout(4000)
            assert page.locator("#history tr.entry").count() == 3  # turned off: no more reads

            page.check("#follow")  # on again: from now on
            page.locator("#history tr.entry.new").nth(2).wait_for()
            assert page.locator("#history tr.entry").first.locator("td.result").text_content() == "ok"
            assert page.locator("#history tr.entry").count() == 4
            details = page.locator("#history tr.details")
            ids = [details.nth(n).get_attribute("id") for n in range(details.count())]
            assert len(set(ids)) == len(ids) == 4  # each entry's button opens its own details

            # Calls after Until never come: Follow is refused with it, and the history shown as asked.
            page.fill("#until", "2024-01-01")
            page.click("#go")
            page.locator("#status", has_text="clear Until to follow").wait_for()
            assert not page.locator("#follow").is_checked()
            assert "follow=" not in page.url
            assert complaints == []
        finally:
            browser.close()


def test_the_page_breaks_no_accessibility_rule_in_any_state_it_shows(stack: Stack) -> None:
    """axe-core's rules (WCAG 2.1 A and AA, and its best practices), run in the page on a laptop and on phones (at 320
    pixels wide nothing may be wider than the screen, as WCAG's reflow asks): the form, entries with a refused call
    and its details open (the links looking further), coverage with days missing and the table's notes, following new
    calls (its reads that find none leave the status, a live region, as it is), and a search refused. axe runs as a
    script in the page, so this test alone opens the page with its Content-Security-Policy bypassed."""
    executable = _chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    axe = pytest.importorskip("axe_playwright_python.sync_playwright").Axe()
    table = "E2ePageAccessible"
    stack.create_table(table)
    dynamodb = stack.client("dynamodb")
    dynamodb.put_item(TableName=table, Item={"id": {"S": "a-1"}, "n": {"N": "1"}})
    with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
        dynamodb.put_item(TableName=table, Item={"id": {"S": "a-1"}}, ConditionExpression="attribute_not_exists(id)")
    dynamodb.delete_item(TableName=table, Key={"id": {"S": "a-1"}})
    stack.wait_for(lambda found: len(found) == 3, table=table, key='{"id": "a-1"}')
    link = f"{stack.api_url}/?" + urllib.parse.urlencode({"table": table, "key": '{"id": "a-1"}', "follow": "2"})
    rules = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}}

    def broken(page: Any) -> list[str]:
        violations = axe.run(page, options={**rules, "resultTypes": ["violations"]}).response["violations"]
        return [f"{rule['id']}: {rule['help']} ({[node['target'] for node in rule['nodes']]})" for rule in violations]

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            for width in (1280, 390, 320):
                page = browser.new_context(bypass_csp=True, viewport={"width": width, "height": 900}).new_page()
                noted = {**INCOMPLETE_COVERAGE, "table_notes": TABLE_NOTES}
                page.route("**/audit/coverage?*", functools.partial(_fulfil, noted))
                page.goto(link)
                assert broken(page) == [], width  # the form, before any answer
                _wait_for_entries(page, 3)
                # Its tab and its table say what it shows: an incident keeps many open.
                assert page.title() == f'{table} {{"id": "a-1"}} – Deutzia'
                assert page.locator("#history caption").text_content() == f'{table} {{"id": "a-1"}}, newest first'
                page.locator("#coverage", has_text="Checked against").wait_for()
                page.locator("#history tr.failed button.toggle").click()
                page.locator("#history tr.failed + tr.details dd.further a").first.wait_for()  # its own details
                assert page.is_checked("#follow")  # following every 2 s, as the link asks
                assert broken(page) == [], width
                if width == 1280:  # the status is a live region: reads finding no new call do not rewrite it
                    page.evaluate(
                        "window.rewrites = 0; new MutationObserver((changes) => { window.rewrites += changes.length; })"
                        ".observe(document.getElementById('status'), "
                        "{childList: true, characterData: true, subtree: true})"
                    )
                    page.wait_for_timeout(5000)  # two reads
                    assert page.evaluate("window.rewrites") == 0
                # WCAG's reflow: at 320 pixels (1280 zoomed to 400 %), nothing is wider than the screen.
                for shown in ("#search label", "#search button", "#history td", "#coverage", "#status"):
                    boxes = [page.locator(shown).nth(n).bounding_box() for n in range(page.locator(shown).count())]
                    assert all(box is None or box["x"] + box["width"] <= width + 1 for box in boxes), (width, shown)
                page.fill("#key", '{"id": ')
                page.click("#go")
                page.locator("#status.error").wait_for()
                assert broken(page) == [], width
                page.fill("#key", json.dumps({"id": "\U0001f3b5" * 300}, ensure_ascii=False))  # a title: 120 of them
                page.click("#go")
                page.locator("#status", has_text="0 entries").wait_for()
                assert page.title() == f'{table} {{"id": "' + "\U0001f3b5" * (120 - len(table) - 9) + "… – Deutzia"
        finally:
            browser.close()
