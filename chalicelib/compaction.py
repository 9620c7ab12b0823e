"""The compacted tier: which fresh objects and compacted files fold into which new file (the plan), and the file
itself: each `(event_id, item_index)` once, sorted by `item_key` then `event_time`, in bounded row groups that never
split one key, so every row group's `item_key` range is disjoint from the others' and one item's history is one
row group per file.

Layout: `<compacted prefix>table_name=<t>/month=<YYYY-MM>/month-<YYYY-MM>-<digest>.parquet`, one file per table and
month, rewritten as each day closes; a day still open is kept in a few `day-<YYYY-MM-DD>-<digest>.parquet` files,
into which every run folds what ingest wrote since, so the fresh tier holds minutes of objects, not a day's (a
month too big for one run stays in day files). The digest is of the inputs, so a rerun of the same plan writes the
same name. Copies of one record that say different things of their call are never resolved here: the one left out
goes back to the fresh tier as a `contested-<digest>.json.gz` object, for reconciliation to settle with the trail's
files. Pure: listings and Arrow data in, a plan, Parquet bytes and contested lines out; `compactor` does the I/O.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from chalicelib.reconcile import COPIED_COLUMNS
from chalicelib.records import (
    CONTESTED_OBJECT_PREFIX,
    encode_lines,
    is_backfill_key,
    is_contested_key,
    record_line,
)

if TYPE_CHECKING:
    import pyarrow as pa

# Rows per row group, before the group is extended to the end of the key it has reached. One key's lookup reads one
# row group per file and every file's footer: smaller groups read less data but grow the footer (`make bench` shows
# the balance).
ROW_GROUP_ROWS = 4096
# Statistics only where a reader prunes with them: the footer stays small (long text columns would fill it).
STATISTICS_COLUMNS = ["item_key", "event_time", "dt"]
# An open day's file is rewritten with the new fresh objects while it is at most this many times their size (with the
# smaller files already taken), or at most SMALL_FILE_BYTES, whose rewrite costs little (a Parquet file's own
# metadata is some KB, so tiny files must merge whatever the ratio).
OPEN_DAY_MERGE_RATIO = 2
SMALL_FILE_BYTES = 1024 * 1024
_FRESH_KEY = re.compile(r"table_name=(?P<table>[^/]+)/dt=(?P<dt>[0-9]{4}-[0-9]{2}-[0-9]{2})/[^/]+\.json\.gz")
_COMPACTED_KEY = re.compile(
    r"table_name=(?P<table>[^/]+)/month=(?P<month>[0-9]{4}-[0-9]{2})/"
    r"(?:day-(?P<day>[0-9]{4}-[0-9]{2}-[0-9]{2})|month-(?P=month))-[0-9a-f]{16}\.parquet"
)
# What copies of one record must say alike: everything CloudTrail gives every copy alike (the attribute names compared
# as a set: their order is the logged one).
SAID_COLUMNS = COPIED_COLUMNS
_SORT_KEYS = [
    ("item_key", "ascending"),
    ("event_time", "ascending"),
    ("event_id", "ascending"),
    ("item_index", "ascending"),
]


class Deduplicated(NamedTuple):
    """Each record once (`kept`); the copies left out that say something else of their call than the one kept
    (`contested`), and the copies the trail's own records replaced that say something else than those (`overruled`):
    each distinct copy once."""

    kept: pa.Table
    contested: pa.Table
    overruled: pa.Table


def deduplicated(records: pa.Table, from_trail: int = 0) -> Deduplicated:
    """`records` with each `(event_id, item_index)` once: the first copy is kept (the sort is stable, so callers put
    the copies to prefer first, `CompactionUnit.inputs`). Copies as ingest writes them are identical; a copy that says
    something else of its call (SAID_COLUMNS) than the one kept means one of them did not come from CloudTrail, and
    which one only the trail's files say: it is returned in `contested` (each distinct copy once), to stay in sight
    until reconciliation restores the trail's own copy. The first `from_trail` rows are the trail's own records of
    their calls (reconciliation wrote them), each call's every record: they replace every other copy of those calls,
    and no copy of theirs is contested; one of those that says something else than the trail's (or names an item the
    trail's event does not) is `overruled`. Vectorised: a partition's millions of rows never become Python objects,
    and only the records that have copies are compared column by column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    none = records.slice(0, 0)
    overruled = none
    if from_trail and records.num_rows > from_trail:
        # The trail's records of a call are all of its records (of this table): any other copy of the call is gone,
        # and so is an item the trail's event does not name (one a forged copy added).
        trails = records.slice(0, from_trail)
        others = records.slice(from_trail)
        replaced = pc.is_in(others.column("event_id"), value_set=pc.unique(trails.column("event_id")))
        overruled = _unlike(others.filter(replaced), trails)
        records = pa.concat_tables([trails, others.filter(pc.invert(replaced))])
    if records.num_rows < 2:
        return Deduplicated(records, none, overruled)
    order = pc.sort_indices(records, sort_keys=[("event_id", "ascending"), ("item_index", "ascending")])
    ordered = records.take(order)
    repeated = _same_as_previous(ordered, ("event_id", "item_index"))
    starts = pa.concat_arrays([pa.array([True]), pc.invert(repeated)])
    kept = ordered.filter(starts)
    # The records with copies: every row of theirs (each follows or is followed by a copy), their copies contiguous.
    copied = pc.or_(pa.concat_arrays([pa.array([False]), repeated]), pa.concat_arrays([repeated, pa.array([False])]))
    copies, positions, copy_starts = ordered.filter(copied), order.filter(copied), starts.filter(copied)
    if copies.num_rows == 0:
        return Deduplicated(kept, none, overruled)
    row = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), copies.num_rows)), 1)
    first = pc.fill_null_forward(pc.if_else(copy_starts, row, pa.scalar(None, pa.int64())))  # each row's kept copy
    said = _said(copies)
    same = None
    for name in SAID_COLUMNS:
        column = said.column(name)
        equal = _equal_or_both_null(column, column.take(first))
        same = equal if same is None else pc.and_(same, equal)
    trails_kept = pc.less(positions.take(first), pa.scalar(from_trail, positions.type))
    contested = copies.filter(pc.invert(pc.or_(same, trails_kept)))
    return Deduplicated(kept, _distinct(contested), overruled)


def _distinct(copies: pa.Table) -> pa.Table:
    """Each distinct copy once: one row per record and what it says (SAID_COLUMNS)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if copies.num_rows < 2:
        return copies
    columns = ("event_id", "item_index", *SAID_COLUMNS)
    said = _said(copies).add_column(0, "event_id", copies.column("event_id"))
    said = said.add_column(1, "item_index", copies.column("item_index"))
    order = pc.sort_indices(said, sort_keys=[(name, "ascending") for name in columns])
    distinct = pa.concat_arrays([pa.array([True]), pc.invert(_same_as_previous(said.take(order), columns))])
    return copies.take(order.filter(distinct))


def _unlike(copies: pa.Table, trails: pa.Table) -> pa.Table:
    """Of `copies`, those that say something else of their call than the trail's record of it in `trails`, or name an
    item the trail's event does not; each distinct copy once."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if copies.num_rows == 0:
        return copies
    keys = ["event_id", "item_index"]
    said = _said(trails).rename_columns([f"trail {name}" for name in SAID_COLUMNS])
    said = pa.table([*trails.select(keys).columns, *said.columns], names=[*keys, *said.column_names])
    said = _distinct_records(said.append_column("trail has it", pa.repeat(pa.scalar(True), said.num_rows)))
    row = pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), copies.num_rows)), 1)
    numbered = pa.table([*copies.select(keys).columns, *_said(copies).columns], names=[*keys, *SAID_COLUMNS])
    numbered = numbered.append_column("row", row)
    joined = numbered.join(said, keys=keys, join_type="left outer")
    same = pc.fill_null(joined.column("trail has it"), False)
    for name in SAID_COLUMNS:
        same = pc.and_(same, _equal_or_both_null(joined.column(name), joined.column(f"trail {name}")))
    return _distinct(copies.take(joined.filter(pc.invert(same)).column("row")))


def _said(table: pa.Table) -> pa.Table:
    """What `table`'s rows say of their call (SAID_COLUMNS), comparable column by column: a list (the attribute names)
    as the text of its sorted items."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = []
    for name in SAID_COLUMNS:
        column = table.column(name)
        if pa.types.is_list(column.type):
            lists = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            values = pc.list_flatten(lists)
            parents = pc.list_parent_indices(lists)
            order = pc.sort_indices(
                pa.table({"parent": parents, "value": values}),
                sort_keys=[("parent", "ascending"), ("value", "ascending")],
            )
            offsets = pc.subtract(lists.offsets, lists.offsets[0])
            ordered = pa.ListArray.from_arrays(offsets, values.take(order), mask=lists.is_null())
            column = pc.binary_join(ordered, "\x00")
        columns.append(column)
    return pa.table(columns, names=list(SAID_COLUMNS))


def _distinct_records(table: pa.Table) -> pa.Table:
    """The first row of each `(event_id, item_index)`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table.num_rows < 2:
        return table
    table = table.take(pc.sort_indices(table, sort_keys=[("event_id", "ascending"), ("item_index", "ascending")]))
    return table.filter(
        pa.concat_arrays([pa.array([True]), pc.invert(_same_as_previous(table, ("event_id", "item_index")))])
    )


def _same_as_previous(table: pa.Table, columns: Sequence[str]) -> pa.BooleanArray:
    """Per row after the first, whether it holds the same values as the row before in `columns` (nulls equal)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    count = table.num_rows
    same = None
    for name in columns:
        column = table.column(name)
        equal = _equal_or_both_null(column.slice(1), column.slice(0, count - 1))
        same = equal if same is None else pc.and_(same, equal)
    return same.combine_chunks() if isinstance(same, pa.ChunkedArray) else same


def _equal_or_both_null(left: pa.Array | pa.ChunkedArray, right: pa.Array | pa.ChunkedArray) -> pa.Array:
    import pyarrow.compute as pc

    return pc.or_(pc.fill_null(pc.equal(left, right), False), pc.and_(pc.is_null(left), pc.is_null(right)))


def key_run_starts(item_keys: pa.ChunkedArray | pa.Array) -> list[int]:
    """The positions where a new key starts, over keys sorted ascending (nulls last, all one run)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    count = len(item_keys)
    if count < 2:
        return [0] if count else []
    earlier, later = item_keys.slice(0, count - 1), item_keys.slice(1)
    same = pc.or_(pc.fill_null(pc.equal(later, earlier), False), pc.and_(pc.is_null(later), pc.is_null(earlier)))
    changes = pc.indices_nonzero(pc.invert(same))
    return [0, *(int(position) + 1 for position in changes.to_pylist())] if isinstance(changes, pa.Array) else [0]


def row_group_bounds(
    item_keys: Sequence[str | None] | pa.ChunkedArray | pa.Array, target_rows: int
) -> list[tuple[int, int]]:
    """`[start, end)` row ranges of about `target_rows` each over keys sorted ascending (nulls last), never
    splitting one key's run across two ranges."""
    import pyarrow as pa

    keys = item_keys if isinstance(item_keys, pa.Array | pa.ChunkedArray) else pa.array(item_keys, pa.string())
    starts = key_run_starts(keys)
    total = len(keys)
    bounds: list[tuple[int, int]] = []
    start = 0
    while start < total:
        # The first key run that starts at or after the target size ends this group.
        later = bisect.bisect_left(starts, start + target_rows)
        end = starts[later] if later < len(starts) else total
        bounds.append((start, end))
        start = end
    return bounds


class CompactedFile(NamedTuple):
    """A compacted file's bytes, and the copies of its records it left out that say something else of their call: for
    reconciliation to settle (`contested`), or settled by the trail's own records (`overruled`)."""

    body: bytes
    contested: pa.Table
    overruled: pa.Table


def compact_to_parquet(records: pa.Table, from_trail: int = 0, target_rows: int = ROW_GROUP_ROWS) -> CompactedFile:
    """The records as one Parquet file (zstd): de-duplicated (`deduplicated`: the first `from_trail` rows are the
    trail's own), sorted, in key-disjoint row groups; with the contested and overruled copies it left out."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    unique, contested, overruled = deduplicated(records, from_trail)
    ordered = unique.take(pc.sort_indices(unique, sort_keys=_SORT_KEYS))
    sink = io.BytesIO()
    statistics = [name for name in STATISTICS_COLUMNS if name in ordered.schema.names]
    with pq.ParquetWriter(sink, ordered.schema, compression="zstd", write_statistics=statistics) as writer:
        for start, end in row_group_bounds(ordered.column("item_key"), target_rows):
            writer.write_table(ordered.slice(start, end - start), row_group_size=end - start)
    return CompactedFile(sink.getvalue(), contested, overruled)


@dataclass(frozen=True)
class StoredObject:
    """An object as listed: its key, size in bytes and ETag (which changes when the object is rewritten)."""

    key: str
    size: int
    etag: str


@dataclass(frozen=True)
class CompactionUnit:
    """One new compacted file: a month of a table (`period` `YYYY-MM`, its closed days so far) or a day (`YYYY-MM-DD`:
    one still open, or one of a month too big for one run), from these fresh objects and the compacted files it
    replaces."""

    table: str
    period: str
    fresh: tuple[StoredObject, ...]
    compacted: tuple[StoredObject, ...]

    @property
    def inputs(self) -> tuple[StoredObject, ...]:
        """Every input, in the order their copies of one record are preferred (`deduplicated` keeps the first): what
        reconciliation wrote from the trail's own files, then what earlier runs compacted, then what ingest wrote, then
        the copies earlier runs left out as contested. A copy that differs from the trail's came through the log
        group, not from CloudTrail."""
        contested = tuple(item for item in self.fresh if is_contested_key(item.key))
        ingested = tuple(item for item in self.fresh if not (is_backfill_key(item.key) or is_contested_key(item.key)))
        return self.from_trail + self.compacted + ingested + contested

    @property
    def from_trail(self) -> tuple[StoredObject, ...]:
        """The inputs reconciliation wrote from the trail's own files (the first of `inputs`)."""
        return tuple(item for item in self.fresh if is_backfill_key(item.key))

    @property
    def input_bytes(self) -> int:
        return sum(item.size for item in self.inputs)

    @property
    def is_month(self) -> bool:
        return len(self.period) == len("YYYY-MM")

    def output_key(self, prefix: str) -> str:
        """Deterministic in the inputs: rerunning the same unit rewrites the same file."""
        digest = hashlib.sha256()
        for item in sorted(self.inputs, key=lambda stored: stored.key):
            digest.update(f"{item.key}\0{item.etag}\0".encode())
        month = self.period[:7]
        name = f"month-{month}" if self.is_month else f"day-{self.period}"
        return f"{compacted_partition(prefix, self.table, month)}{name}-{digest.hexdigest()[:16]}.parquet"

    def describe(self) -> str:
        inputs = f"{len(self.fresh)} fresh, {len(self.compacted)} compacted, {self.input_bytes:,} bytes"
        return f"{self.table} {self.period} ({inputs})"


@dataclass(frozen=True)
class CompactionPlan:
    """The units to run, oldest first, and the fresh objects refused this run: what one run cannot hold beside what
    it takes of the same day (each held by a unit that is not run)."""

    units: tuple[CompactionUnit, ...]
    refused: tuple[CompactionUnit, ...]


def contested_objects(prefix: str, table: str, contested: pa.Table) -> dict[str, bytes]:
    """The fresh objects that keep contested copies: one per day (`dt`), gzip JSON Lines as ingest writes them, named
    after their content, so a run that leaves out the same copies again writes the same object. `table` as it
    appears in the fresh tier's keys."""
    import pyarrow.compute as pc

    objects = {}
    for day in sorted(set(contested.column("dt").to_pylist())):
        rows = contested.filter(pc.equal(contested.column("dt"), day)).drop_columns(["dt"]).to_pylist()
        body = encode_lines(record_line(row) for row in rows)
        name = f"{CONTESTED_OBJECT_PREFIX}{hashlib.sha256(body).hexdigest()[:16]}.json.gz"
        objects[f"{prefix}table_name={table}/dt={day}/{name}"] = body
    return objects


def compacted_partition(prefix: str, table: str, month: str) -> str:
    """`<prefix>table_name=<t>/month=<YYYY-MM>/`; `table` as it appears in the fresh tier's keys."""
    return f"{prefix}table_name={table}/month={month}/"


def fresh_partition_of(key: str, prefix: str) -> tuple[str, str] | None:
    """`(table, dt)` of a fresh object's key (the table as the key spells it), None for any other key."""
    match = _FRESH_KEY.fullmatch(key[len(prefix) :]) if key.startswith(prefix) else None
    return (match["table"], match["dt"]) if match else None


def compacted_period_of(key: str, prefix: str) -> tuple[str, str] | None:
    """`(table, period)` of a compacted file's key: a day `YYYY-MM-DD` or a month `YYYY-MM`; None for any other."""
    match = _COMPACTED_KEY.fullmatch(key[len(prefix) :]) if key.startswith(prefix) else None
    if not match:
        return None
    return match["table"], match["day"] or match["month"]


def plan_compaction(
    fresh: Iterable[StoredObject],
    compacted: Iterable[StoredObject],
    fresh_prefix: str,
    compacted_prefix: str,
    last_closed_day: str,
    max_input_bytes: int,
) -> CompactionPlan:
    """What to compact: for each table and month, its closed days (up to `last_closed_day`) that have fresh objects
    fold with the month's compacted files into one month file, so that a year of a table is a dozen files and one
    item's history a dozen row groups. A day still open folds its fresh objects into day files of its own (a few, see
    `open_day_files`), which the month takes in once the day closes, so that a lookup never reads more than the
    minutes since the last run from the fresh tier. A month too big for one run is kept in day files instead, each
    day folding in its own fresh objects and merging as many of its files, smallest first, as fit in one run. A
    day's fresh objects are folded as far as one run holds them; those left over are refused (in `refused`), and a
    later run takes them, so a backlog drains while the refusals say it is there. The copies an earlier run left out
    as contested (`deduplicated`) start no unit: each unit of their day takes them in again, and they wait beside the
    files, in sight, until reconciliation writes the trail's own copy (which starts one)."""
    fresh_by_day: dict[tuple[str, str], list[StoredObject]] = defaultdict(list)
    for item in fresh:
        partition = fresh_partition_of(item.key, fresh_prefix)
        if partition is not None:
            fresh_by_day[partition].append(item)
    files_by_period: dict[tuple[str, str], list[StoredObject]] = defaultdict(list)
    for item in compacted:
        period = compacted_period_of(item.key, compacted_prefix)
        if period is not None:
            files_by_period[period].append(item)
    units: list[CompactionUnit] = []
    refused: list[CompactionUnit] = []

    def plan_day(table: str, day: str, is_open: bool) -> None:
        # The day's fresh objects, oldest first in each shard, as many as one run holds; the rest wait, loudly.
        day_fresh, left, room = [], [], max_input_bytes
        for item in sorted(fresh_by_day[(table, day)], key=lambda stored: stored.key):
            if item.size <= room:
                day_fresh.append(item)
                room -= item.size
            else:
                left.append(item)
        if left:
            refused.append(CompactionUnit(table, day, tuple(left), ()))
        files = files_by_period[(table, day)]
        # Records reconciliation restored from the trail must meet every other copy of theirs: all the day's files.
        restoring = any(is_backfill_key(item.key) for item in day_fresh)
        candidates = (
            open_day_files(day_fresh, files) if is_open and not restoring else sorted(files, key=_smallest_first)
        )
        taken = _fitting(candidates, room)
        if any(not is_contested_key(item.key) for item in day_fresh) or len(taken) > 1:
            units.append(CompactionUnit(table, day, tuple(day_fresh), tuple(taken)))

    for table, day in sorted(key for key in fresh_by_day if key[1] > last_closed_day):
        plan_day(table, day, is_open=True)
    closed_files = {key: items for key, items in files_by_period.items() if key[1] <= last_closed_day}
    closed_fresh = {key: items for key, items in fresh_by_day.items() if key[1] <= last_closed_day}
    months = {(table, day[:7]) for table, day in closed_fresh} | {(table, p[:7]) for table, p in closed_files}
    for table, month in sorted(months):
        days = sorted(day for t, day in closed_fresh if t == table and day[:7] == month)
        new = [day for day in days if any(not is_contested_key(item.key) for item in closed_fresh[(table, day)])]
        periods = sorted(p for t, p in closed_files if t == table and p[:7] == month)
        files = tuple(item for period in periods for item in closed_files[(table, period)])
        if not new and len(files) < 2 and periods in ([], [month]):
            continue  # nothing new: the month is one month file already (and its contested copies wait for the trail's)
        whole = CompactionUnit(table, month, tuple(item for day in days for item in closed_fresh[(table, day)]), files)
        if whole.input_bytes <= max_input_bytes:
            units.append(whole)
            continue
        for day in sorted(set(new) | {p for p in periods if p != month and len(closed_files[(table, p)]) > 1}):
            plan_day(table, day, is_open=False)
    units.sort(key=lambda unit: (unit.period[:7], unit.period, unit.table))  # oldest first, across tables
    return CompactionPlan(tuple(units), tuple(refused))


def _smallest_first(item: StoredObject) -> tuple[int, str]:
    return item.size, item.key


def _fitting(files: Sequence[StoredObject], room: int) -> list[StoredObject]:
    """The leading files of `files` whose sizes add up to at most `room`."""
    taken: list[StoredObject] = []
    for item in files:
        room -= item.size
        if room < 0:
            break
        taken.append(item)
    return taken


def open_day_files(fresh: Sequence[StoredObject], files: Sequence[StoredObject]) -> list[StoredObject]:
    """The files of an open day that its new fresh objects fold into: smallest first, each while it is at most
    OPEN_DAY_MERGE_RATIO times what is folded so far (or small), so the day's files stay few and of growing sizes
    (a few, as in size-tiered compaction), and each run rewrites a few times what came since, not the whole day: over
    a day of runs every 5 minutes, about 6 times the day's bytes are written, not 140."""
    folded = sum(item.size for item in fresh)
    chosen = []
    for item in sorted(files, key=_smallest_first):
        if item.size > max(OPEN_DAY_MERGE_RATIO * folded, SMALL_FILE_BYTES):
            break
        chosen.append(item)
        folded += item.size
    return chosen
