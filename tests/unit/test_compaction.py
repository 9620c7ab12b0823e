"""The compacted tier's file, checked from the Parquet metadata itself: sorted, key-disjoint row groups, each
`(event_id, item_index)` once; and a key's history readable from one row group. The plan: what folds into what as
days open and close, its bounds, and runs after runs that drain any backlog and then come to rest."""

from __future__ import annotations

import io
import itertools
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.columnar import RECORD_SCHEMA, fresh_records
from chalicelib.compaction import (
    CompactionUnit,
    StoredObject,
    compact_to_parquet,
    contested_objects,
    deduplicated,
    open_day_files,
    plan_compaction,
    row_group_bounds,
)


def _records(rows: list[tuple[str, int, str, str | None]]) -> pa.Table:
    columns: dict[str, list[Any]] = {field.name: [None] * len(rows) for field in RECORD_SCHEMA}
    columns["event_id"] = [row[0] for row in rows]
    columns["item_index"] = [row[1] for row in rows]
    columns["event_time"] = [row[2] for row in rows]
    columns["item_key"] = [row[3] for row in rows]
    columns["event_name"] = ["PutItem"] * len(rows)
    columns["operation"] = ["Put"] * len(rows)
    columns["attribute_names"] = [[] for _ in rows]
    columns["success"] = [True] * len(rows)
    return pa.table(columns, schema=RECORD_SCHEMA)


rows = st.lists(
    st.tuples(
        st.sampled_from([f"e{n}" for n in range(30)]),
        st.integers(0, 3),
        st.sampled_from([f"2024-05-01T00:00:{n:02d}Z" for n in range(60)]),
        st.sampled_from(['{"id":"a"}', '{"id":"b"}', '{"id":"c"}', '{"id":"d"}', None]),
    ),
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(rows, st.integers(1, 40))
def test_the_file_is_deduplicated_sorted_and_its_row_groups_never_share_a_key(
    given_rows: list[tuple[str, int, str, str | None]], target: int
) -> None:
    # Copies of one (event_id, item_index) are identical, as ingest writes them: the first of each is kept.
    first: dict[tuple[str, int], tuple[str, int, str, str | None]] = {}
    for row in given_rows:
        first.setdefault((row[0], row[1]), row)
    duplicated = given_rows + list(first.values())
    records = _records([first[(row[0], row[1])] for row in duplicated])
    compacted = compact_to_parquet(records, target_rows=target)
    assert compacted.contested.num_rows == 0  # identical copies: nothing to contest
    parquet = pq.ParquetFile(io.BytesIO(compacted.body))
    table = parquet.read()
    pairs = list(zip(table.column("event_id").to_pylist(), table.column("item_index").to_pylist(), strict=True))
    assert len(pairs) == len(set(pairs)) == len(first)
    keys = table.column("item_key").to_pylist()
    present = [key for key in keys if key is not None]
    assert present == sorted(present)
    assert keys[len(present) :] == [None] * (len(keys) - len(present))  # nulls last
    metadata = parquet.metadata
    ranges = []
    for group in range(metadata.num_row_groups):
        column = metadata.row_group(group).column(table.schema.get_field_index("item_key"))
        assert column.compression == "ZSTD"
        if column.statistics is not None and column.statistics.has_min_max:
            ranges.append((column.statistics.min, column.statistics.max))
    for (_, previous_max), (next_min, _) in itertools.pairwise(ranges):
        assert previous_max < next_min  # disjoint: one key's history is in one row group


@settings(max_examples=60, deadline=None)
@given(st.permutations(["trail", "compacted", "ingest", "ingest again"]))
def test_of_copies_that_differ_the_trails_is_kept_then_the_compacted_one_then_ingests(order: list[str]) -> None:
    # Copies of one record differ only when one did not come from CloudTrail (forged in the log group): reconciliation
    # writes the trail's own copy beside it, and the unit's inputs come in the order their copies are preferred.
    names = {"trail": "backfill-111_CloudTrail_x", "ingest": "shardId-0-1-2", "ingest again": "shardId-0-3-4"}
    fresh = [_fresh("Music", "2024-05-01", names[source]) for source in order if source != "compacted"]
    unit = CompactionUnit("Music", "2024-05", tuple(fresh), (_file("Music", "2024-05"),))
    keys = [item.key for item in unit.inputs]
    assert keys[:2] == [_fresh("Music", "2024-05-01", names["trail"]).key, _file("Music", "2024-05").key]
    assert set(keys[2:]) == {_fresh("Music", "2024-05-01", names[source]).key for source in ("ingest", "ingest again")}
    read = {item.key: _records([("e1", 0, "2024-05-01T00:00:00Z", f'{{"id":"{item.key}"}}')]) for item in unit.inputs}
    compacted = compact_to_parquet(pa.concat_tables(read[key] for key in keys), from_trail=1)
    parquet = pq.read_table(io.BytesIO(compacted.body))
    assert parquet.column("item_key").to_pylist() == [f'{{"id":"{keys[0]}"}}']
    assert compacted.contested.num_rows == 0  # the trail's own copy settles it


copies = st.lists(
    st.tuples(
        st.sampled_from(["e1", "e2", "e3"]),
        st.integers(0, 1),
        st.sampled_from(['{"id":"a"}', '{"id":"b"}', None]),
        st.sampled_from(["alice", "mallory", None]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(copies, st.integers(0, 40))
def test_copies_that_say_something_else_are_left_out_once_each_and_the_trails_own_replace_their_calls(
    given_copies: list[tuple[str, int, str | None, str | None]], trail_rows: int
) -> None:
    # Copies of one record that name another item or caller than the copy kept: one did not come from CloudTrail. The
    # first copy is kept; each other distinct copy is contested, once. The first `from_trail` rows are the trail's
    # records of their calls, all of them: any other copy of those calls, or item they do not name, is gone.
    from_trail = min(trail_rows, len(given_copies))
    records = _records([(event, index, "2024-05-01T00:00:00Z", key) for event, index, key, _ in given_copies])
    records = records.set_column(
        records.schema.get_field_index("principal_arn"),
        "principal_arn",
        pa.array([c[3] for c in given_copies], pa.string()),
    )
    kept, contested, overruled = deduplicated(records, from_trail)

    restored = {copy[0] for copy in given_copies[:from_trail]}
    first: dict[tuple[str, int], tuple[str | None, str | None]] = {}
    others: dict[tuple[str, int], set[tuple[str | None, str | None]]] = {}
    for position, (event, index, key, principal) in enumerate(given_copies):
        if position >= from_trail and event in restored:
            continue
        first.setdefault((event, index), (key, principal))
        others.setdefault((event, index), set()).add((key, principal))
    said = {(row["event_id"], row["item_index"]): (row["item_key"], row["principal_arn"]) for row in kept.to_pylist()}
    assert said == first
    assert kept.num_rows == len(first)
    expected = [
        (record, copy)
        for record, kept_copy in first.items()
        if record[0] not in restored
        for copy in others[record] - {kept_copy}
    ]
    found = [
        ((row["event_id"], row["item_index"]), (row["item_key"], row["principal_arn"])) for row in contested.to_pylist()
    ]
    assert sorted(found, key=repr) == sorted(expected, key=repr)  # each distinct copy once
    trails: dict[tuple[str, int], tuple[str | None, str | None]] = {}
    for event, index, key, principal in given_copies[:from_trail]:
        trails.setdefault((event, index), (key, principal))
    replaced = {
        ((event, index), (key, principal))
        for event, index, key, principal in given_copies[from_trail:]
        if event in restored and trails.get((event, index)) != (key, principal)
    }
    said_by_replaced = [
        ((row["event_id"], row["item_index"]), (row["item_key"], row["principal_arn"])) for row in overruled.to_pylist()
    ]
    assert sorted(said_by_replaced, key=repr) == sorted(replaced, key=repr)  # each distinct copy once


_CHANGES = st.tuples(
    st.sampled_from(["SET #n = :v", "REMOVE #n", None]),
    st.lists(st.sampled_from(["role", "name", "id"]), unique=True, max_size=3),
    st.sampled_from(['{"key":{"id":"k"}}', '{"key":{"id":"k"},"returnValues":"ALL_OLD"}']),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_CHANGES, min_size=1, max_size=8), st.randoms(use_true_random=False))
def test_copies_that_change_what_a_call_did_are_contested_and_those_that_differ_only_in_order_are_not(
    changes: list[tuple[str | None, list[str], str]], rng: Any
) -> None:
    # A copy that says the call ran another expression, on other attributes or with other parameters did not come from
    # CloudTrail, as one naming another item does. The order of the attribute names (the logged order of a mapping's
    # values) is not compared; the request parameters are written with their keys sorted.
    records = _records([("e", 0, "2024-05-01T00:00:00Z", "k")] * len(changes))
    names = [rng.sample(attributes, len(attributes)) for _, attributes, _ in changes]
    for column, values in (
        ("update_expression", [change[0] for change in changes]),
        ("attribute_names", names),
        ("request_parameters", [change[2] for change in changes]),
    ):
        index = records.schema.get_field_index(column)
        records = records.set_column(index, column, pa.array(values, records.schema.field(index).type))
    kept, contested, _ = deduplicated(records)

    def said(expression: str | None, attributes: list[str], parameters: str) -> tuple[object, ...]:
        return expression, tuple(sorted(attributes)), parameters

    def said_by(row: dict[str, Any]) -> tuple[object, ...]:
        return said(row["update_expression"], row["attribute_names"], row["request_parameters"])

    first = said(*changes[0])
    assert [said_by(row) for row in kept.to_pylist()] == [first]
    others = {said(*change) for change in changes} - {first}
    found = [said_by(row) for row in contested.to_pylist()]
    assert sorted(found, key=repr) == sorted(others, key=repr)  # each distinct copy once


def test_contested_copies_go_back_as_fresh_objects_named_after_their_content() -> None:
    records = _records([("e1", 0, "2024-05-01T00:00:00Z", '{"id":"a"}'), ("e1", 0, "2024-05-01T00:00:00Z", None)])
    records = records.append_column("dt", pa.array(["2024-05-01", "2024-05-01"]))
    contested = deduplicated(records).contested
    objects = contested_objects("audit/", "Music", contested)
    (key,) = objects
    assert key.startswith("audit/table_name=Music/dt=2024-05-01/contested-")
    assert key.endswith(".json.gz")
    assert contested_objects("audit/", "Music", contested) == objects  # the same copies, the same object
    read = fresh_records(objects[key], "2024-05-01")
    assert read.to_pylist() == contested.to_pylist()
    assert contested_objects("audit/", "Music", contested.slice(0, 0)) == {}


def test_contested_objects_start_no_unit_but_every_unit_of_their_day_takes_them_in_last() -> None:
    contested = _fresh("Music", "2024-05-01", "contested-0123456789abcdef")
    # Alone, beside the day's or the month's single file, they wait (no rewrite at every run).
    assert _plan([contested], [_file("Music", "2024-05-01")], "2024-04-30") == []
    assert _plan([contested], [_file("Music", "2024-05")], "2024-05-31") == []
    # With anything else to fold, or the trail's own copies, the unit takes them in, after every other input.
    for other in ("shardId-000000000000-1-2", "backfill-111_CloudTrail_us-east-1_x"):
        fresh = [contested, _fresh("Music", "2024-05-01", other)]
        for closed, file in (("2024-04-30", _file("Music", "2024-05-01")), ("2024-05-31", _file("Music", "2024-05"))):
            (unit,) = plan_compaction(fresh, [file], "audit/", "compacted/", closed, 10**9).units
            assert unit.inputs[-1] == contested, other


def test_row_groups_are_bounded_but_never_split_a_key() -> None:
    keys = ["a"] * 5 + ["b"] * 2 + ["c"] + [None] * 3
    assert row_group_bounds(keys, 3) == [(0, 5), (5, 8), (8, 11)]
    assert row_group_bounds([], 3) == []
    assert row_group_bounds(["a", "b", "c", "d"], 2) == [(0, 2), (2, 4)]


def _fresh(table: str, day: str, name: str, size: int = 100) -> StoredObject:
    return StoredObject(f"audit/table_name={table}/dt={day}/{name}.json.gz", size, f'"{name}"')


def _file(table: str, period: str, size: int = 100) -> StoredObject:
    name = f"month-{period}" if len(period) == 7 else f"day-{period}"
    return StoredObject(f"compacted/table_name={table}/month={period[:7]}/{name}-{'0' * 16}.parquet", size, '"f"')


def _file_named(table: str, day: str, name: str, size: int) -> StoredObject:
    return StoredObject(f"compacted/table_name={table}/month={day[:7]}/day-{day}-{name:0>16}.parquet", size, '"f"')


def _plan(fresh: list[StoredObject], files: list[StoredObject], closed: str, limit: int = 10**9) -> list[str]:
    plan = plan_compaction(fresh, files, "audit/", "compacted/", closed, limit)
    units = [f"{u.table} {u.period} {len(u.fresh)}+{len(u.compacted)}" for u in plan.units]
    return units + [f"refused {u.table} {u.period}" for u in plan.refused]


def test_closed_days_fold_into_their_months_file_as_they_close() -> None:
    fresh = [_fresh("Music", "2024-05-01", "a"), _fresh("Music", "2024-05-01", "b"), _fresh("Music", "2024-05-02", "c")]
    assert _plan(fresh, [], "2024-05-02") == ["Music 2024-05 3+0"]
    assert _plan(fresh[2:], [_file("Music", "2024-05")], "2024-05-02") == ["Music 2024-05 1+1"]
    assert _plan([], [_file("Music", "2024-05")], "2024-05-30") == []
    assert _plan([_fresh("Books", "2024-06-01", "x")], [], "2024-06-01") == ["Books 2024-06 1+0"]


def test_an_open_day_folds_into_day_files_of_its_own_which_its_month_takes_in_once_the_day_closes() -> None:
    fresh = [_fresh("Music", "2024-05-01", "a"), _fresh("Music", "2024-05-01", "b"), _fresh("Music", "2024-05-02", "c")]
    # Before either day closes, each day folds into its own file; the month's file is not touched.
    assert _plan(fresh, [_file("Music", "2024-04")], "2024-04-30") == ["Music 2024-05-01 2+0", "Music 2024-05-02 1+0"]
    # Later objects of an open day fold into that day's file again.
    later = [_fresh("Music", "2024-05-02", "d")]
    assert _plan(later, [_file("Music", "2024-05-01"), _file("Music", "2024-05-02")], "2024-05-01") == [
        "Music 2024-05 0+1",
        "Music 2024-05-02 1+1",
    ]
    # An open day's files with nothing new wait for the day to close.
    assert _plan([], [_file("Music", "2024-05-02"), _file("Music", "2024-05-02")], "2024-05-01") == []
    # Once the day closes, the month takes in its day files and any late objects.
    files = [_file("Music", "2024-05"), _file("Music", "2024-05-02"), _file("Music", "2024-05-02")]
    assert _plan(later, files, "2024-05-02") == ["Music 2024-05 1+3"]


def test_an_open_day_rewrites_its_small_files_but_not_a_big_one_until_enough_has_come_since() -> None:
    mb = 1024 * 1024
    big, small = _file("Music", "2024-05-02", 20 * mb), _file("Music", "2024-05-02", 3 * mb)
    new = [_fresh("Music", "2024-05-02", "new", 2 * mb)]
    assert _plan(new, [big, small], "2024-05-01") == ["Music 2024-05-02 1+1"]  # 3 MB <= 2 x 2 MB; 20 MB > 2 x 5 MB
    more = [_fresh("Music", "2024-05-02", "more", 8 * mb)]
    assert _plan(more, [big, small], "2024-05-01") == ["Music 2024-05-02 1+2"]  # 20 MB <= 2 x 11 MB
    # Files under a MB are rewritten whatever the ratio: a Parquet file's own metadata is some KB.
    tiny = [_fresh("Music", "2024-05-02", "tiny", 1000)]
    assert _plan(tiny, [_file("Music", "2024-05-02", 500_000)], "2024-05-01") == ["Music 2024-05-02 1+1"]
    # Records reconciliation restored from the trail's files take in every file of the day, where any copy may be.
    restored = [_fresh("Music", "2024-05-02", "backfill-111_CloudTrail_x", 1000)]
    assert _plan(restored, [big, small], "2024-05-01") == ["Music 2024-05-02 1+2"]


def test_a_day_of_runs_every_5_minutes_writes_a_few_times_the_day_into_a_few_files() -> None:
    files: list[StoredObject] = []
    written = 0
    for run in range(288):
        new = [_fresh("Music", "2024-05-02", f"run-{run}", 512 * 1024)]
        taken = open_day_files(new, files)
        size = sum(item.size for item in [*new, *taken])
        files = [item for item in files if item not in taken] + [_file_named("Music", "2024-05-02", f"{run}", size)]
        written += size
        assert len(files) <= 6
    assert written < 7 * 288 * 512 * 1024  # rewriting one day file each run would write 144 times the day


def test_an_open_day_too_big_for_one_run_is_refused_while_the_closed_ones_go_on() -> None:
    fresh = [_fresh("Music", "2024-05-01", "a", 10), _fresh("Music", "2024-05-02", "big", 500)]
    assert _plan(fresh, [], "2024-05-01", limit=100) == ["Music 2024-05 1+0", "refused Music 2024-05-02"]


def test_files_left_beside_each_other_merge_and_late_records_fold_in() -> None:
    files = [_file("Music", "2024-05-01"), _file("Music", "2024-05-02")]
    assert _plan([], files, "2024-05-31") == ["Music 2024-05 0+2"]
    assert _plan([], [_file("Music", "2024-05"), _file("Music", "2024-05")], "2024-06-30") == ["Music 2024-05 0+2"]
    late = [_fresh("Music", "2024-05-09", "late")]
    assert _plan(late, [_file("Music", "2024-05")], "2024-06-30") == ["Music 2024-05 1+1"]


def test_a_backlog_bigger_than_one_run_drains_over_runs_and_is_refused_until_it_has() -> None:
    backlog = [_fresh("Music", "2024-05-20", f"o{n}", 30) for n in range(5)]
    assert _plan(backlog, [], "2024-05-19", limit=100) == ["Music 2024-05-20 3+0", "refused Music 2024-05-20"]
    plan = plan_compaction(backlog, [], "audit/", "compacted/", "2024-05-19", 100)
    assert [item.key for item in plan.refused[0].fresh] == [item.key for item in backlog[3:]]
    # The next run folds the rest (the first run's day file, 90 bytes, does not fit beside it and stays).
    assert _plan(backlog[3:], [_file("Music", "2024-05-20", 90)], "2024-05-19", limit=100) == ["Music 2024-05-20 2+0"]
    # One object bigger than a run holds never blocks the others.
    big = [_fresh("Music", "2024-05-20", "a-big", 500), *backlog[:2]]
    assert _plan(big, [], "2024-05-19", limit=100) == ["Music 2024-05-20 2+0", "refused Music 2024-05-20"]


def test_a_month_too_big_for_one_run_stays_in_days_and_a_day_too_big_is_refused() -> None:
    files = [_file("Music", "2024-05-01", 60), _file("Music", "2024-05-02", 60)]
    late = [_fresh("Music", "2024-05-02", "late", 10), _fresh("Music", "2024-05-03", "big", 500)]
    assert _plan(late, files, "2024-06-30", limit=100) == ["Music 2024-05-02 1+1", "refused Music 2024-05-03"]


def test_a_day_whose_files_are_too_big_to_merge_keeps_them_and_is_never_refused_for_them() -> None:
    # The day files an open day left (size-tiered) may hold more than one run can merge once the day closes: they
    # stay as they are (each sorted, one row group per file for a key), and only what fits is merged.
    files = [_file_named("Music", "2024-05-02", "a", 60), _file_named("Music", "2024-05-02", "b", 70)]
    month = [_file("Music", "2024-05", 90)]
    assert _plan([], files + month, "2024-05-31", limit=100) == []
    small = [_file_named("Music", "2024-05-02", "c", 20), _file_named("Music", "2024-05-02", "d", 30)]
    assert _plan([], files + small + month, "2024-05-31", limit=100) == ["Music 2024-05-02 0+2"]
    # A late object folds in with the smaller files that fit beside it.
    late = [_fresh("Music", "2024-05-02", "late", 15)]
    assert _plan(late, files + small + month, "2024-05-31", limit=100) == ["Music 2024-05-02 1+2"]
    # An open day's new objects fold in with as many of its small files as fit, never refused for those files.
    fresh = [_fresh("Music", "2024-05-20", "new", 40)]
    open_files = [_file_named("Music", "2024-05-20", "e", 30), _file_named("Music", "2024-05-20", "f", 40)]
    assert _plan(fresh, open_files, "2024-05-19", limit=100) == ["Music 2024-05-20 1+1"]


def test_keys_outside_the_layout_are_left_alone() -> None:
    strays = [
        StoredObject("audit/table_name=Music/dt=2024-05-01/notes.txt", 1, '"x"'),
        StoredObject("audit/table_name=Music/2024-05-01/a.json.gz", 1, '"x"'),
        StoredObject("compacted/table_name=Music/month=2024-05/other.parquet", 1, '"x"'),
    ]
    assert _plan(strays[:2], strays[2:], "2099-01-01") == []


def test_units_come_oldest_first_across_tables() -> None:
    fresh = [_fresh("Music", "2024-06-02", "a"), _fresh("Books", "2024-06-01", "b"), _fresh("Music", "2024-05-03", "c")]
    assert _plan(fresh, [], "2024-06-30") == ["Music 2024-05 1+0", "Books 2024-06 1+0", "Music 2024-06 1+0"]


_DAYS = [f"2024-05-{day:02d}" for day in range(28, 32)] + ["2024-06-01", "2024-06-02"]


@st.composite
def _listings(draw: st.DrawFn) -> tuple[list[StoredObject], list[StoredObject], str, int]:
    tables, sizes = st.sampled_from(["Music", "Books"]), st.integers(1, 300)
    fresh = [
        _fresh(table, day, f"o{n}", size)
        for n, (table, day, size) in enumerate(draw(st.lists(st.tuples(tables, st.sampled_from(_DAYS), sizes))))
    ]
    periods = st.sampled_from([*_DAYS, "2024-05", "2024-06"])
    files = [
        StoredObject(
            f"compacted/table_name={table}/month={period[:7]}/{'day' if len(period) > 7 else 'month'}-{period}-"
            f"{n:016x}.parquet",
            size,
            f'"{n}"',
        )
        for n, (table, period, size) in enumerate(draw(st.lists(st.tuples(tables, periods, sizes), max_size=8)))
    ]
    return fresh, files, draw(st.sampled_from(_DAYS)), draw(st.integers(50, 2000))


@given(_listings())
@settings(max_examples=300, deadline=None)
def test_a_plan_gives_each_object_to_one_unit_of_its_own_period_and_leaves_no_fresh_object_out_unless_refused(
    listing: tuple[list[StoredObject], list[StoredObject], str, int],
) -> None:
    fresh, files, closed, limit = listing
    plan = plan_compaction(fresh, files, "audit/", "compacted/", closed, limit)
    planned = [item.key for unit in plan.units for item in unit.inputs]
    assert len(planned) == len(set(planned))  # a unit's inputs are deleted once its file is stored
    for unit in plan.units:
        assert unit.input_bytes <= limit
        assert {item.key.split("/")[1] for item in unit.inputs} == {f"table_name={unit.table}"}
        # A unit folds its own period: a day's unit only that day, an open day's never anything of a closed one.
        assert all(f"{unit.period}" in item.key for item in unit.inputs)
        if not unit.is_month:
            assert all(unit.period in item.key for item in unit.inputs)
        else:
            assert all(item.key.split("dt=")[-1][:10] <= closed for item in unit.fresh)
    refused = {item.key for unit in plan.refused for item in unit.fresh}
    assert {item.key for item in fresh} <= set(planned) | refused  # every fresh object is folded now, or refused
    for unit in plan.refused:  # refused only what does not fit beside what the run takes of that day
        assert not unit.compacted
        taken = sum(
            item.size
            for done in plan.units
            if (done.table, done.period) == (unit.table, unit.period)
            for item in done.fresh
        )
        assert all(item.size > limit - taken for item in unit.fresh)


_RUN_DAYS = [f"2024-05-{day:02d}" for day in range(27, 32)] + ["2024-06-01", "2024-06-02"]


def _run_plan(fresh: list[StoredObject], files: list[StoredObject], closed: str, limit: int) -> tuple[int, int]:
    """One run, as the compactor does it: each unit's inputs become one file of their size. Units and refusals."""
    plan = plan_compaction(fresh, files, "audit/", "compacted/", closed, limit)
    for unit in plan.units:
        output = StoredObject(unit.output_key("compacted/"), unit.input_bytes, f'"{unit.output_key("")[-24:]}"')
        gone = {item.key for item in unit.inputs}
        fresh[:] = [item for item in fresh if item.key not in gone]
        files[:] = [item for item in files if item.key not in gone and item.key != output.key] + [output]
    return len(plan.units), len(plan.refused)


@given(
    st.lists(st.lists(st.tuples(st.sampled_from(_RUN_DAYS), st.integers(1, 400)), max_size=6), max_size=12),
    st.integers(500, 3000),
)
@settings(max_examples=150, deadline=None)
def test_runs_over_days_that_open_and_close_drain_the_fresh_tier_and_then_rewrite_nothing(
    arrivals: list[list[tuple[str, int]]], limit: int
) -> None:
    # Objects arrive run after run while the days close one by one (late ones too); then the arrivals stop and every
    # day closes. Runs must then drain the fresh tier and come to rest: nothing refused, nothing rewritten again.
    fresh: list[StoredObject] = []
    files: list[StoredObject] = []
    names = itertools.count()
    for run, objects in enumerate(arrivals):
        fresh += [_fresh("Music", day, f"o{next(names):04d}", size) for day, size in objects]
        closed = _RUN_DAYS[min(run // 2, len(_RUN_DAYS) - 1)]
        _run_plan(fresh, files, closed, limit)
        assert all(item.size <= limit for item in files)  # no file bigger than a run may read
    for _ in range(30):  # a backlog drains a run's worth at a time, refused (loudly) until it has
        units, refused = _run_plan(fresh, files, "2024-06-30", limit)
        if units == 0:
            break
    else:
        raise AssertionError(f"still rewriting after 30 runs: {len(fresh)} fresh, {len(files)} files")
    assert (fresh, refused) == ([], 0)
    for period in {item.key.split("/")[2] for item in files}:  # at rest: a month is one file, or day files too big
        in_month = [item for item in files if f"/{period}/" in item.key]
        assert len(in_month) == 1 or sum(item.size for item in in_month) > limit
