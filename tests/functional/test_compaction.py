"""Compaction against moto's S3, read back through GET /audit: duplicates from retries invisible before and gone
after, the Parquet checked from its own metadata, a crash between every two steps, queries while it runs, late
records, limits of size and time, and the scheduled function itself."""

from __future__ import annotations

import gzip
import io
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from chalice.test import Client

import app as deutzia_app
from chalicelib.compactor import CompactionRefusedError, S3Compactor
from chalicelib.duckdb_engine import AuditObjects, s3_filesystem
from chalicelib.errors import StoreError
from deutzia_local.lambda_context import LambdaContext
from tests.factories import cloudtrail_event

FAR_FUTURE = "2999-12-31"


def _events(day: str, count: int, keys: int = 3, prefix: str = "") -> list[dict[str, Any]]:
    return [
        cloudtrail_event(
            request_parameters={"tableName": "Music", "key": {"id": f"{prefix}k{n % keys}"}, "item": ["id"]},
            event_time=f"{day}T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z",
        )
        for n in range(count)
    ]


def _history(client: Client, key: str | None = None) -> list[tuple[str, int]]:
    """Every (event_id, item_index) GET /audit gives for Music (or one of its keys), following every page."""
    found: list[tuple[str, int]] = []
    token = None
    while True:
        query = "/audit?table=Music&limit=1000"
        if key is not None:
            query += "&key=" + quote(json.dumps({"id": key}))
        if token:
            query += f"&next_token={token}"
        response = client.http.get(query)
        assert response.status_code == 200, response.body
        body = json.loads(response.body)
        found += [(entry["event_id"], entry["item_index"]) for entry in body["entries"]]
        token = body["next_token"]
        if not token:
            return found


def _keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def _body(s3: Any, bucket: str, key: str) -> io.BytesIO:
    return io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _compactor(s3: Any, bucket: str, **options: Any) -> S3Compactor:
    """A compactor that deletes what it replaced at the end of its run (no grace), unless `options` give one."""
    return S3Compactor(s3, bucket, "audit/", "compacted/", **{"grace_seconds": 0, **options})


def _forever() -> float:
    return 900.0


def test_retried_duplicates_are_invisible_before_compaction_and_gone_after(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    events = _events("2024-05-01", 30)
    ingest(events[:20])
    ingest(events[10:])  # a bisected retry: events 10-19 stored twice, under another name
    expected = sorted((event["eventID"], 0) for event in events)
    assert sorted(_history(client)) == expected
    report = _compactor(s3, audit_bucket).run(FAR_FUTURE, _forever)
    assert (report.rows_in, report.rows_out) == (40, 30)
    assert _keys(s3, audit_bucket, "audit/") == []
    (key,) = _keys(s3, audit_bucket, "compacted/")
    assert key.startswith("compacted/table_name=Music/month=2024-05/month-2024-05-")
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=audit_bucket, Key=key)["Body"].read()))
    pairs = list(zip(table.column("event_id").to_pylist(), table.column("item_index").to_pylist(), strict=True))
    assert sorted(pairs) == expected
    assert set(table.column("dt").to_pylist()) == {"2024-05-01"}
    assert sorted(_history(client)) == expected
    assert sorted(_history(client, "k1")) == sorted(
        (e["eventID"], 0) for e in events if e["requestParameters"]["key"]["id"] == "k1"
    )


def test_the_compacted_file_is_sorted_with_key_disjoint_row_groups_and_one_row_group_per_key(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    ingest(_events("2024-05-01", 200, keys=40))
    ingest(_events("2024-05-02", 200, keys=40, prefix="x"))
    _compactor(s3, audit_bucket, row_group_rows=25).run(FAR_FUTURE, _forever)
    (key,) = _keys(s3, audit_bucket, "compacted/")
    parquet = pq.ParquetFile(io.BytesIO(s3.get_object(Bucket=audit_bucket, Key=key)["Body"].read()))
    metadata = parquet.metadata
    assert metadata.num_rows == 400
    assert metadata.num_row_groups > 4
    key_column = parquet.schema_arrow.get_field_index("item_key")
    ranges = []
    for group in range(metadata.num_row_groups):
        column = metadata.row_group(group).column(key_column)
        assert column.compression == "ZSTD"
        ranges.append((column.statistics.min, column.statistics.max))
    assert ranges == sorted(ranges)
    assert all(ranges[n][1] < ranges[n + 1][0] for n in range(len(ranges) - 1))
    table = parquet.read()
    order = list(zip(table.column("item_key").to_pylist(), table.column("event_time").to_pylist(), strict=True))
    assert order == sorted(order)
    # One key's rows sit in exactly one row group.
    groups_with_k7 = [n for n, (low, high) in enumerate(ranges) if low <= '{"id":"k7"}' <= high]
    assert len(groups_with_k7) == 1
    assert parquet.read_row_group(groups_with_k7[0]).column("item_key").to_pylist().count('{"id":"k7"}') == 5


def test_a_month_is_one_file_rewritten_as_each_day_closes_and_an_open_day_is_a_day_file_rewritten_as_it_grows(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    first, second = _events("2024-05-01", 10), _events("2024-05-02", 10)
    ingest(first, second[:5])
    compactor = _compactor(s3, audit_bucket)
    compactor.run("2024-05-01", _forever)  # only the first day has closed
    day_file, month_file = _keys(s3, audit_bucket, "compacted/")  # sorted by name
    assert month_file.rsplit("/", 1)[1].startswith("month-2024-05-")
    assert day_file.rsplit("/", 1)[1].startswith("day-2024-05-02-")
    assert _keys(s3, audit_bucket, "audit/") == []
    # The open day grows: the next run folds what came since into a new day file, and leaves the month alone.
    ingest(second[5:])
    assert [key.split("/")[2] for key in _keys(s3, audit_bucket, "audit/")] == ["dt=2024-05-02"]
    assert sorted(_history(client)) == sorted((e["eventID"], 0) for e in first + second)
    assert compactor.run("2024-05-01", _forever).files != []
    grown_day, same_month = _keys(s3, audit_bucket, "compacted/")
    assert (same_month, _keys(s3, audit_bucket, "audit/")) == (month_file, [])
    assert grown_day != day_file
    assert grown_day.rsplit("/", 1)[1].startswith("day-2024-05-02-")
    assert sorted(_history(client)) == sorted((e["eventID"], 0) for e in first + second)
    # The day closes: the month's file takes it in.
    compactor.run("2024-05-02", _forever)
    (rewritten,) = _keys(s3, audit_bucket, "compacted/")
    assert rewritten != month_file
    assert rewritten.rsplit("/", 1)[1].startswith("month-2024-05-")
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket=audit_bucket, Key=rewritten)["Body"].read()))
    assert sorted(set(table.column("dt").to_pylist())) == ["2024-05-01", "2024-05-02"]
    assert table.num_rows == 20
    assert compactor.run("2024-05-31", _forever).files == []  # nothing new: nothing rewritten
    assert sorted(_history(client)) == sorted((e["eventID"], 0) for e in first + second)


def test_a_late_record_for_a_compacted_day_is_folded_in_by_the_next_run(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    events = _events("2024-05-01", 12)
    ingest(events[:10])
    compactor = _compactor(s3, audit_bucket)
    compactor.run(FAR_FUTURE, _forever)
    ingest(events[10:] + events[:2])  # late, and two of them already compacted
    assert sorted(_history(client)) == sorted((e["eventID"], 0) for e in events)
    report = compactor.run(FAR_FUTURE, _forever)
    assert (report.rows_in, report.rows_out) == (10 + 4, 12)
    assert _keys(s3, audit_bucket, "audit/") == []
    assert len(_keys(s3, audit_bucket, "compacted/")) == 1
    assert sorted(_history(client)) == sorted((e["eventID"], 0) for e in events)


class _CrashError(Exception):
    """The process died here."""


class _CrashingS3:
    """An S3 client that dies before its `crash_at`-th step (a read, write, check or delete)."""

    STEPS = frozenset({"get_object", "put_object", "head_object", "delete_objects"})

    def __init__(self, inner: Any, crash_at: int) -> None:
        self._inner = inner
        self._crash_at = crash_at
        self.steps = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self.STEPS:
            return attribute

        def step(*arguments: Any, **keywords: Any) -> Any:
            with self._lock:
                self.steps += 1
                if self.steps == self._crash_at:
                    raise _CrashError(name)
            return attribute(*arguments, **keywords)

        return step


def test_a_crash_between_any_two_steps_loses_nothing_shows_nothing_twice_and_the_rerun_finishes(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    events = _events("2024-05-01", 9) + _events("2024-05-02", 9, prefix="b")
    expected = sorted((e["eventID"], 0) for e in events)
    counting = _CrashingS3(s3, crash_at=0)
    ingest(events[:6]), ingest(events[6:12]), ingest(events[12:])
    _compactor(counting, audit_bucket).run("2024-05-01", _forever)
    steps = counting.steps
    for crash_at in range(1, steps + 1):
        for key in _keys(s3, audit_bucket, "compacted/"):
            s3.delete_object(Bucket=audit_bucket, Key=key)
        ingest(events[:6]), ingest(events[6:12]), ingest(events[12:])
        crashing = _CrashingS3(s3, crash_at)
        with pytest.raises(_CrashError):
            _compactor(crashing, audit_bucket).run("2024-05-01", _forever)
        assert sorted(_history(client)) == expected, f"after a crash at step {crash_at}"
        _compactor(s3, audit_bucket).run("2024-05-01", _forever)
        assert sorted(_history(client)) == expected, f"after the rerun of a crash at step {crash_at}"
        day_file, month_file = _keys(s3, audit_bucket, "compacted/")
        assert ("/month-2024-05-" in month_file, "/day-2024-05-02-" in day_file) == (True, True)
        assert _keys(s3, audit_bucket, "audit/") == []
    # For the closed day's month file and the open day's file: 2 reads, the write and its check, the note of what it
    # replaced and its check; then, the grace over (none here), the 2 notes read and one delete of their objects.
    assert steps == 15


def test_copies_that_name_another_item_stay_in_sight_through_a_crash_at_any_step_and_then_rest(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    """A forged copy of a call naming another item and caller, delivered before the real one: compaction keeps one
    copy in its file and the other in a `contested-` object, so each item's history still shows its copy, whatever
    step a run dies at; once settled, later runs leave both alone until the trail's own copy comes."""
    real = _events("2024-05-01", 1)[0]
    forged = {
        **real,
        "requestParameters": {"tableName": "Music", "key": {"id": "elsewhere"}, "item": ["id"]},
        "userIdentity": cloudtrail_event(user="mallory")["userIdentity"],
    }
    others = _events("2024-05-01", 4, prefix="o")[1:]

    def shown() -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
        return _history(client, "k0"), _history(client, "elsewhere"), sorted(_history(client))

    counting = _CrashingS3(s3, crash_at=0)
    ingest([forged]), ingest([real, *others])
    expected = shown()
    assert expected[:2] == ([(real["eventID"], 0)], [(real["eventID"], 0)])
    _compactor(counting, audit_bucket).run(FAR_FUTURE, _forever)
    steps = counting.steps
    for crash_at in range(1, steps + 1):
        for key in _keys(s3, audit_bucket, "compacted/") + _keys(s3, audit_bucket, "audit/"):
            s3.delete_object(Bucket=audit_bucket, Key=key)
        ingest([forged]), ingest([real, *others])
        with pytest.raises(_CrashError):
            _compactor(_CrashingS3(s3, crash_at), audit_bucket).run(FAR_FUTURE, _forever)
        assert shown() == expected, f"after a crash at step {crash_at}"
        _compactor(s3, audit_bucket).run(FAR_FUTURE, _forever)
        assert shown() == expected, f"after the rerun of a crash at step {crash_at}"
        (contested,) = _keys(s3, audit_bucket, "audit/")
        assert "/dt=2024-05-01/contested-" in contested
        (month_file,) = _keys(s3, audit_bucket, "compacted/")
        assert pq.read_table(_body(s3, audit_bucket, month_file)).num_rows == 4  # each record once in the file
        report = _compactor(s3, audit_bucket).run(FAR_FUTURE, _forever)
        assert (report.files, _keys(s3, audit_bucket, "audit/")) == ([], [contested])  # at rest
    # 2 reads, the contested object and its check, the file and its check, the note and its check, the note read, the
    # delete.
    assert steps == 10


class _Clock:
    """The compactor's clock, moved on by the test."""

    def __init__(self) -> None:
        self.now = datetime(2024, 6, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _rows_of(s3: Any, bucket: str, keys: list[str]) -> tuple[set[tuple[str, int]], list[str]]:
    """The records in these objects, each read now, and the objects gone (on which a query fails)."""
    rows: set[tuple[str, int]] = set()
    gone = []
    for key in keys:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            gone.append(key)
            continue
        if key.endswith(".parquet"):
            table = pq.read_table(io.BytesIO(body), columns=["event_id", "item_index"])
            rows |= set(zip(table.column("event_id").to_pylist(), table.column("item_index").to_pylist(), strict=True))
        else:
            lines = gzip.decompress(body).splitlines()
            rows |= {(record["event_id"], record["item_index"]) for record in map(json.loads, lines)}
    return rows, gone


@pytest.mark.parametrize("grace", [240.0, 0.0])
def test_a_query_that_lists_the_compacted_tier_before_a_run_and_the_fresh_tier_after_misses_nothing_in_the_grace(
    ingest: Callable[..., Any], s3: Any, audit_bucket: str, grace: float
) -> None:
    """Athena lists each tier of the `audit` view when it will. A query that listed the compacted tier before a run
    stored its files and the fresh tier after the run, and reads them after that, still finds every record and no
    object gone, as long as it runs within the grace; without one (the behaviour before it), it misses what the run
    folded in."""
    events = _events("2024-05-01", 12) + _events("2024-05-02", 12, prefix="b")
    expected = {(event["eventID"], 0) for event in events}
    ingest(events[:12])
    clock = _Clock()
    compactor = _compactor(s3, audit_bucket, grace_seconds=grace, clock=clock)
    compactor.run("2024-04-30", _forever)  # the first day's own file: the second run rewrites it into the month's
    ingest(events[12:])
    listed_compacted = _keys(s3, audit_bucket, "compacted/table_name=")
    clock.now += timedelta(seconds=60)
    compactor.run("2024-05-01", _forever)
    listed_fresh = _keys(s3, audit_bucket, "audit/")
    clock.now += timedelta(seconds=60)
    compactor.run("2024-05-01", _forever)  # a run within the grace deletes nothing either
    rows, gone = _rows_of(s3, audit_bucket, listed_compacted + listed_fresh)
    if grace:
        assert (rows, gone) == (expected, [])
    else:  # the first day's file is gone under the query, and the second day's records were never listed
        assert (len(gone), rows) == (1, set())


def test_a_run_in_the_grace_folds_nothing_again_and_the_first_run_after_it_deletes_what_was_replaced(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    events = _events("2024-05-01", 12)
    ingest(events[:6]), ingest(events[6:])
    expected = sorted((event["eventID"], 0) for event in events)
    fresh = _keys(s3, audit_bucket, "audit/")
    clock = _Clock()
    compactor = _compactor(s3, audit_bucket, grace_seconds=240, clock=clock)
    first = compactor.run(FAR_FUTURE, _forever)
    assert (len(first.files), first.inputs, first.deleted, first.waiting) == (1, 2, 0, 2)
    (note,) = _keys(s3, audit_bucket, "superseded/")
    assert note.startswith("superseded/Music/month-2024-05-")
    assert _keys(s3, audit_bucket, "audit/") == fresh
    assert sorted(_history(client)) == expected  # both tiers hold them: each once
    clock.now += timedelta(seconds=239)
    within = compactor.run(FAR_FUTURE, _forever)
    assert (within.files, within.deleted, within.waiting) == ([], 0, 2)
    clock.now += timedelta(seconds=1)
    after = compactor.run(FAR_FUTURE, _forever)
    assert (after.files, after.deleted, after.waiting) == ([], 2, 0)
    assert _keys(s3, audit_bucket, "audit/") == []
    assert _keys(s3, audit_bucket, "compacted/") == first.files
    assert sorted(_history(client)) == expected


def test_an_object_rewritten_in_its_grace_is_new_input_not_deleted(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    """Reconciliation rewrites its object of a trail file with more records; one compaction replaced before that is
    not deleted when its grace ends, but folded again."""
    events = _events("2024-05-01", 12)
    ingest(events[:6])
    (rewritten,) = _keys(s3, audit_bucket, "audit/")
    clock = _Clock()
    compactor = _compactor(s3, audit_bucket, grace_seconds=240, clock=clock)
    compactor.run(FAR_FUTURE, _forever)
    ingest(events[6:])
    (other,) = set(_keys(s3, audit_bucket, "audit/")) - {rewritten}
    both = gzip.compress(
        gzip.decompress(_body(s3, audit_bucket, rewritten).read())
        + gzip.decompress(_body(s3, audit_bucket, other).read())
    )
    s3.put_object(Bucket=audit_bucket, Key=rewritten, Body=both)
    s3.delete_object(Bucket=audit_bucket, Key=other)
    clock.now += timedelta(seconds=240)
    report = compactor.run(FAR_FUTURE, _forever)
    assert (len(report.files), report.deleted, report.inputs) == (1, 0, 2)  # the rewritten object, and the file
    assert _keys(s3, audit_bucket, "audit/") == [rewritten]
    assert sorted(_history(client)) == sorted((event["eventID"], 0) for event in events)
    clock.now += timedelta(seconds=240)
    assert compactor.run(FAR_FUTURE, _forever).deleted == 2
    assert _keys(s3, audit_bucket, "audit/") == []
    assert sorted(_history(client)) == sorted((event["eventID"], 0) for event in events)


def test_a_note_that_is_not_one_is_named_and_what_it_would_hold_is_folded_again(
    ingest: Callable[..., Any], s3: Any, audit_bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    ingest(_events("2024-05-01", 6))
    s3.put_object(Bucket=audit_bucket, Key="superseded/Music/month-2024-05-0.json", Body=b'{"file": 1}')
    report = _compactor(s3, audit_bucket, grace_seconds=240).run(FAR_FUTURE, _forever)
    assert len(report.files) == 1
    assert "superseded/Music/month-2024-05-0.json: it is not a note of superseded objects" in caplog.text


def test_queries_while_compaction_runs_see_every_entry_exactly_once(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    events = [event for day in range(1, 5) for event in _events(f"2024-05-0{day}", 15, prefix=str(day))]
    expected = sorted((e["eventID"], 0) for e in events)
    done = threading.Event()
    answers: list[list[tuple[str, int]]] = []

    def query() -> None:
        while not done.is_set():
            answers.append(sorted(_history(client)))

    for start in range(0, len(events), 5):
        ingest(events[start : start + 5])
    reader = threading.Thread(target=query)
    reader.start()
    compactor = _compactor(s3, audit_bucket)
    for day in ("2024-05-01", "2024-05-02", "2024-05-03", "2024-05-04", FAR_FUTURE):
        compactor.run(day, _forever)
    done.set()
    reader.join()
    assert answers
    assert all(answer == expected for answer in answers)


class _CompactionDeletesOnOpen(pafs.FileSystemHandler):
    """moto's S3 as the DuckDB engine reads it, but each fresh object is deleted just before it is first opened: what
    compaction does to an object a read listed, at every object of the read."""

    def __init__(self, s3: Any, bucket: str, endpoint: str, written: dict[str, bytes] | None = None) -> None:
        self._s3, self._bucket = s3, bucket
        self._inner = s3_filesystem(endpoint)
        self._written = dict(written or {})  # what compaction stored before its deletes: there once the first is done
        self.deleted: list[str] = []

    def _delete_if_fresh(self, path: str) -> None:
        key = path.removeprefix(f"{self._bucket}/")
        if key.startswith("audit/") and key not in self.deleted and key not in self._written:
            for written, body in self._written.items():
                self._s3.put_object(Bucket=self._bucket, Key=written, Body=body)
            self._s3.delete_object(Bucket=self._bucket, Key=key)
            self.deleted.append(key)

    def open_input_stream(self, path: str) -> Any:
        self._delete_if_fresh(path)
        return self._inner.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        self._delete_if_fresh(path)
        return self._inner.open_input_file(path)

    def get_type_name(self) -> str:
        return "compaction-deletes-on-open"

    def equals(self, other: Any) -> bool:
        return self is other

    def normalize_path(self, path: str) -> str:
        return str(self._inner.normalize_path(path))

    def get_file_info(self, paths: list[str]) -> Any:
        return self._inner.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> Any:
        return self._inner.get_file_info(selector)

    def _refused(self, *arguments: Any) -> Any:
        raise AssertionError("the engine only reads")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _refused
    move = copy_file = open_output_stream = open_append_stream = _refused


def test_a_read_leaves_out_fresh_objects_compaction_deleted_after_listing_them_and_finds_their_rows_compacted(
    ingest: Callable[..., Any], s3: Any, audit_bucket: str, moto_endpoint: str
) -> None:
    """Compaction stores its file before it deletes the objects it folded in, and a read takes the fresh tier first:
    an object gone since the listing is left out, as its rows are in the compacted tier. Starting the read over
    instead could lose that race at every attempt while a backlog is deleted."""
    events = _events("2024-05-01", 24)
    for start in range(0, 24, 3):
        ingest(events[start : start + 3])
    keys = _keys(s3, audit_bucket, "audit/")
    fresh = {key: s3.get_object(Bucket=audit_bucket, Key=key)["Body"].read() for key in keys}
    assert len(fresh) == 8
    _compactor(s3, audit_bucket).run(FAR_FUTURE, _forever)
    for key, body in fresh.items():  # as between compaction's write and its deletes
        s3.put_object(Bucket=audit_bucket, Key=key, Body=body)
    handler = _CompactionDeletesOnOpen(s3, audit_bucket, moto_endpoint)

    tiers = AuditObjects(pafs.PyFileSystem(handler), audit_bucket, "audit/", "compacted/").read("Music")

    assert sorted(handler.deleted) == sorted(fresh)
    assert tiers.fresh.num_rows == 0
    compacted = tiers.compacted
    pairs = zip(compacted.column("event_id").to_pylist(), compacted.column("item_index").to_pylist(), strict=True)
    assert sorted(pairs) == sorted((event["eventID"], 0) for event in events)


def test_a_read_that_loses_fresh_objects_to_compaction_finds_the_copies_it_left_out_as_contested(
    ingest: Callable[..., Any], s3: Any, audit_bucket: str, moto_endpoint: str
) -> None:
    """A copy compaction leaves out as contested moves within the fresh tier, into an object stored before the
    compacted file: a read that listed the fresh tier before that object was there, and found the copy's own object
    gone, reads the contested objects again after the compacted tier, so it never misses the copy."""
    real = _events("2024-05-01", 1)[0]
    forged = {**real, "userIdentity": cloudtrail_event(user="mallory")["userIdentity"]}
    ingest([real]), ingest([forged])
    fresh = {key: _body(s3, audit_bucket, key).getvalue() for key in _keys(s3, audit_bucket, "audit/")}
    _compactor(s3, audit_bucket).run(FAR_FUTURE, _forever)
    (contested,) = _keys(s3, audit_bucket, "audit/")
    written = {contested: _body(s3, audit_bucket, contested).getvalue()}
    s3.delete_object(Bucket=audit_bucket, Key=contested)
    for key, body in fresh.items():  # listed by the read before compaction stored the contested object
        s3.put_object(Bucket=audit_bucket, Key=key, Body=body)
    handler = _CompactionDeletesOnOpen(s3, audit_bucket, moto_endpoint, written)

    tiers = AuditObjects(pafs.PyFileSystem(handler), audit_bucket, "audit/", "compacted/").read("Music")

    assert sorted(handler.deleted) == sorted(fresh)
    callers = tiers.compacted.column("principal_name").to_pylist() + tiers.fresh.column("principal_name").to_pylist()
    assert sorted(callers) == ["alice", "mallory"]


def test_a_partition_too_big_for_one_run_is_refused_loudly_and_stays_readable(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    small, big = _events("2024-05-01", 3), _events("2024-05-02", 300, prefix="big")
    ingest(small)
    ingest(big)
    sizes = {
        key: s3.head_object(Bucket=audit_bucket, Key=key)["ContentLength"] for key in _keys(s3, audit_bucket, "audit/")
    }
    limit = min(sizes.values()) + 1
    with pytest.raises(CompactionRefusedError, match=r"Music 2024-05-02"):
        _compactor(s3, audit_bucket, max_input_bytes=limit).run("2024-05-10", _forever)
    # The small day was compacted; the big one waits, readable.
    assert [key.rsplit("/", 1)[1][:14] for key in _keys(s3, audit_bucket, "compacted/")] == ["day-2024-05-01"]
    assert [key.split("/")[2] for key in _keys(s3, audit_bucket, "audit/")] == ["dt=2024-05-02"]
    assert sorted(_history(client)) == sorted((e["eventID"], 0) for e in small + big)


def test_a_backlog_bigger_than_one_run_drains_over_runs_each_of_them_loud_until_it_has(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    batches = [_events("2024-05-02", 20, keys=20, prefix=f"b{n}-") for n in range(5)]
    for batch in batches:  # an invocation each: an object each
        ingest(batch)
    sizes = [s3.head_object(Bucket=audit_bucket, Key=key)["ContentLength"] for key in _keys(s3, audit_bucket, "audit/")]
    assert len(sizes) == 5
    compactor = _compactor(s3, audit_bucket, max_input_bytes=2 * max(sizes))  # two objects a run
    expected = sorted((e["eventID"], 0) for batch in batches for e in batch)
    for left in (3, 1):  # the day is open: each run folds two objects into a day file and refuses the rest, loudly
        with pytest.raises(CompactionRefusedError, match=rf"Music 2024-05-02 \({left} fresh"):
            compactor.run("2024-05-01", _forever)
        assert len(_keys(s3, audit_bucket, "audit/")) == left
        assert sorted(_history(client)) == expected
    assert len(compactor.run("2024-05-01", _forever).files) == 1
    assert _keys(s3, audit_bucket, "audit/") == []
    assert sorted(_history(client)) == expected
    assert all("/day-2024-05-02-" in key for key in _keys(s3, audit_bucket, "compacted/"))


def test_a_run_stops_before_a_unit_it_cannot_finish_in_time_and_the_next_run_goes_on(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    ingest(_events("2024-05-01", 5), _events("2024-06-01", 5), _events("2024-07-01", 5))
    seconds_left = iter([900.0, 61.0, 0.0])
    report = _compactor(s3, audit_bucket).run(FAR_FUTURE, lambda: next(seconds_left))
    assert len(report.files) == 2
    assert [unit.split(" ")[1] for unit in report.deferred] == ["2024-07"]
    report = _compactor(s3, audit_bucket).run(FAR_FUTURE, _forever)
    assert len(report.files) == 1
    assert _keys(s3, audit_bucket, "audit/") == []


def test_the_scheduled_function_compacts_closed_days_and_defers_what_its_time_cannot_cover(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = _events("2024-05-01", 4)
    ingest(events)
    scheduled = client.events.generate_cw_event("Scheduled Event", "aws.events", {}, [])
    # chalice.test gives every invocation a context with 3 s left: less than the reserve a unit needs.
    response = client.lambda_.invoke("compact_audit_records", scheduled)
    assert (response.payload["files"], response.payload["deferred"]) == ([], 1)
    # The deployed function has 15 minutes.
    payload = deutzia_app.compact_audit_records(scheduled, LambdaContext("compact_audit_records", 900_000))
    assert (len(payload["files"]), payload["deferred"], payload["waiting"]) == (1, 0, 1)
    # What it replaced stays for the grace (240 s), for queries that listed it; the next run after that deletes it.
    assert len(_keys(s3, audit_bucket, "audit/")) == 1
    assert sorted(_history(client)) == sorted((e["eventID"], 0) for e in events)
    payload = deutzia_app.compact_audit_records(scheduled, LambdaContext("compact_audit_records", 900_000))
    assert (payload["files"], payload["deleted"], payload["waiting"]) == ([], 0, 1)
    monkeypatch.setenv("COMPACTION_GRACE_SECONDS", "0.001")
    payload = deutzia_app.compact_audit_records(scheduled, LambdaContext("compact_audit_records", 900_000))
    assert (payload["files"], payload["deleted"], payload["waiting"]) == ([], 1, 0)
    assert _keys(s3, audit_bucket, "audit/") == []
    assert _keys(s3, audit_bucket, "superseded/") == []
    assert sorted(_history(client)) == sorted((e["eventID"], 0) for e in events)


def test_the_scheduled_function_publishes_the_copies_it_left_out_as_contested(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    real = _events("2024-05-01", 1)[0]
    ingest([real]), ingest([{**real, "userIdentity": cloudtrail_event(user="mallory")["userIdentity"]}])
    scheduled = client.events.generate_cw_event("Scheduled Event", "aws.events", {}, [])
    capsys.readouterr()

    payload = deutzia_app.compact_audit_records(scheduled, LambdaContext("compact_audit_records", 900_000))
    again = deutzia_app.compact_audit_records(scheduled, LambdaContext("compact_audit_records", 900_000))

    assert (payload["contested"], again["contested"]) == (1, 0)  # the contested object waits, and starts no run
    assert "kept aside for reconciliation: 1, replaced by the trail's own: 0" in payload["summary"]
    assert "kept aside" not in again["summary"]
    published = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ContestedCopies"' in line]
    assert [(document["ContestedCopies"], document["service"]) for document in published] == [
        ([1.0], "deutzia-compaction"),
        ([0.0], "deutzia-compaction"),
    ]
    assert published[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Deutzia"


def test_a_run_that_fails_after_contesting_copies_still_publishes_them(
    client: Client,
    ingest: Callable[..., Any],
    s3: Any,
    audit_bucket: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = _events("2024-05-01", 1)[0]
    ingest([real]), ingest([{**real, "userIdentity": cloudtrail_event(user="mallory")["userIdentity"]}])
    stored = S3Compactor._put_checked

    def refuse_files(compactor: S3Compactor, key: str, body: bytes, *rest: Any) -> None:
        if key.endswith(".parquet"):
            raise StoreError(f"S3 PutObject to {key} failed: SlowDown")
        stored(compactor, key, body, *rest)

    monkeypatch.setattr(S3Compactor, "_put_checked", refuse_files)
    scheduled = client.events.generate_cw_event("Scheduled Event", "aws.events", {}, [])
    capsys.readouterr()

    with pytest.raises(StoreError):
        deutzia_app.compact_audit_records(scheduled, LambdaContext("compact_audit_records", 900_000))

    published = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"ContestedCopies"' in line]
    assert [document["ContestedCopies"] for document in published] == [[1.0]]
    assert sum("/contested-" in key for key in _keys(s3, audit_bucket, "audit/")) == 1


def test_two_runs_at_once_lose_nothing_and_the_later_one_leaves_what_it_lost_to_the_next(
    client: Client, ingest: Callable[..., Any], s3: Any, audit_bucket: str
) -> None:
    events = _events("2024-05-01", 12)
    ingest(events[:6], events[6:])

    class _Overtaken:
        """An S3 client whose first read comes after another run compacted everything it had listed."""

        def __init__(self, inner: Any) -> None:
            self._inner = inner
            self._overtaken = False

        def __getattr__(self, name: str) -> Any:
            attribute = getattr(self._inner, name)
            if name != "get_object" or self._overtaken:
                return attribute

            def get_object(**arguments: Any) -> Any:
                self._overtaken = True
                _compactor(s3, audit_bucket).run(FAR_FUTURE, _forever)
                return attribute(**arguments)

            return get_object

    report = _compactor(_Overtaken(s3), audit_bucket).run(FAR_FUTURE, _forever)
    assert (report.files, len(report.deferred)) == ([], 1)
    assert _keys(s3, audit_bucket, "audit/") == []
    assert len(_keys(s3, audit_bucket, "compacted/")) == 1
    assert sorted(_history(client)) == sorted((e["eventID"], 0) for e in events)
