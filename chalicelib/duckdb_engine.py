"""GET /audit and reconciliation on DuckDB, for the local stack: the same SQL as Athena over the same S3 objects.

pyarrow reads both tiers from S3 (its own client; DuckDB's httpfs cannot be installed here) as hive-partitioned
datasets typed by the schema: partitions prune objects before any is read, as Athena's do, and the key prunes the
compacted Parquet's row groups by their statistics (each compacted file's footer is read once and kept: a compacted
file never changes, a new name replaces it). DuckDB then runs the shared SQL over that Arrow data. Every query lists
the objects afresh, so new records show at once. The deadline covers the whole request: reads run on a
small pool of their own (pyarrow's threaded scans deadlock once concurrent scans fill its CPU pool, so each scan runs
on one thread), and a read that outlives it is answered 504 while later requests go on. Errors name no path or
engine internals. A query without a key reads back from its newest end a window of days at a time, as on Athena.
Local use only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import boto3
import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
from pyarrow import fs as pafs

from chalicelib.columnar import (
    COMPACTED_FILE_SCHEMA,
    COMPACTED_PARTITION_SCHEMA,
    FRESH_PARTITION_SCHEMA,
    RECORD_SCHEMA,
    TRAIL_SCHEMA,
    json_parse_options,
    json_read_options,
    trail_rows,
)
from chalicelib.compaction import compacted_period_of
from chalicelib.config import audit_prefix, compacted_prefix, number, setting
from chalicelib.errors import InvalidRequestError, QueryError, QueryTimeoutError, QueryUnavailableError
from chalicelib.query import (
    ENTRY_COLUMNS,
    AuditPage,
    AuditQuery,
    PageToken,
    Position,
    Relations,
    build_audit_sql,
    collect_page,
    row_to_entry,
)
from chalicelib.reconcile import (
    MAX_TRAIL_FILE_BYTES,
    CorruptTrailFileError,
    ReconcileRelations,
    ReconcileWindow,
    build_reconcile_sql,
    read_tally,
    read_trail_file,
)
from chalicelib.reconciler import EngineResult
from chalicelib.records import is_backfill_key, is_contested_key

logger = logging.getLogger("deutzia.duckdb")

DEFAULT_TIMEOUT_SECONDS = 25.0
# Scans that may run at once; a request waits its turn within its own deadline.
MAX_CONCURRENT_READS = 4
# Compaction may replace a compacted file between a read's listing and its fetch: the read starts over, this many
# times (a fresh object it deleted is left out: its rows are in the compacted tier, read after the fresh one).
READ_ATTEMPTS = 5
# Each fresh row's object, as Athena's hidden column names it.
_PATH = pa.field("$path", pa.string())
# Compacted files whose footers the engine keeps: a table's year is a dozen files, and a month's footer a few
# hundred KB in memory, so 512 hold some 40 table-years in well under a GB.
MAX_CACHED_FOOTERS = 512


def s3_filesystem(endpoint_url: str | None) -> pafs.S3FileSystem:
    """pyarrow's S3 client with boto3's credentials and region, through `endpoint_url` when given."""
    session = boto3.session.Session()
    credentials = session.get_credentials()
    options: dict[str, Any] = {"region": session.region_name or "us-east-1"}
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options.update(access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token)
    if endpoint_url:
        scheme, _, authority = endpoint_url.partition("://")
        options.update(endpoint_override=authority.rstrip("/"), scheme=scheme)
    return pafs.S3FileSystem(**options)


@dataclass
class _FreshReading:
    """One reading of the fresh tier: whether an object it listed was gone when read (compaction folded it in), and,
    for a reading after the compacted tier's, the objects read before: it reads only `contested-` objects besides."""

    vanished: bool = False
    besides: set[str] | None = None


@dataclass(frozen=True)
class Tiers:
    """Audit records as Arrow: the compacted tier's rows (with `month` and `dt`) and the fresh tier's."""

    compacted: pa.Table
    fresh: pa.Table


class AuditObjects:
    """The audit records under s3://<bucket>/, both tiers, read as Arrow and pruned by partition and key."""

    def __init__(self, filesystem: pafs.FileSystem, bucket: str, fresh_prefix: str, compacted_prefix: str) -> None:
        self._filesystem = filesystem
        self._bucket = bucket
        self._fresh = _Tier(
            f"{bucket}/{fresh_prefix.rstrip('/')}",
            ds.JsonFileFormat(parse_options=json_parse_options(), read_options=json_read_options()),
            pa.unify_schemas([RECORD_SCHEMA, FRESH_PARTITION_SCHEMA]),
            FRESH_PARTITION_SCHEMA,
        )
        self._compacted = _Tier(
            f"{bucket}/{compacted_prefix.rstrip('/')}",
            ds.ParquetFileFormat(),
            pa.unify_schemas([COMPACTED_FILE_SCHEMA, COMPACTED_PARTITION_SCHEMA]),
            COMPACTED_PARTITION_SCHEMA,
        )
        self._footers = _FooterCache(filesystem, self._compacted.file_format)

    @classmethod
    def from_environment(cls, endpoint_url: str | None = None) -> AuditObjects:
        """Both tiers of $AUDIT_BUCKET ($AUDIT_PREFIX and $COMPACTED_PREFIX), through `endpoint_url` when given."""
        filesystem = s3_filesystem(endpoint_url or os.environ.get("AWS_ENDPOINT_URL"))
        return cls(filesystem, setting("AUDIT_BUCKET"), audit_prefix(), compacted_prefix())

    def read(
        self,
        table: str | None = None,
        dt_from: str | None = None,
        dt_to: str | None = None,
        item_key: str | None = None,
    ) -> Tiers:
        """The records of `table` (all tables when None) with `dt_from <= dt <= dt_to` and the key `item_key` (any
        when None); QueryUnavailableError or QueryError when the bucket cannot be read. The fresh tier is read
        first: compaction stores a file before it deletes its inputs, so a row leaving the fresh tier after that
        read is already in the compacted one, or, a copy compaction left out as contested, in a `contested-` object
        stored before that file: those the first reading did not list are read last."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                first = _FreshReading()
                fresh = self._read_tier(self._fresh, table, dt_from, dt_to, item_key, first)
                compacted = self._read_tier(self._compacted, table, dt_from, dt_to, item_key)
                if first.vanished:
                    besides = _FreshReading(besides=set(fresh.column(_PATH.name).unique().to_pylist()))
                    later = self._read_tier(self._fresh, table, dt_from, dt_to, item_key, besides)
                    fresh = pa.concat_tables([fresh, later])
                return Tiers(compacted, fresh)
            except FileNotFoundError as exc:
                if attempt == READ_ATTEMPTS:
                    raise self._unavailable(exc) from exc
                logger.info("an audit object went away during a read (compaction); reading again")
        raise AssertionError("unreachable")

    def _read_tier(
        self,
        tier: _Tier,
        table: str | None,
        dt_from: str | None,
        dt_to: str | None,
        item_key: str | None,
        reading: _FreshReading | None = None,
    ) -> pa.Table:
        """The tier's rows in the partitions and of the key given (of the fresh tier, as `reading` says)."""
        try:
            if tier is self._compacted:
                dataset = self._compacted_dataset(table, dt_from, dt_to)
            else:
                dataset = ds.dataset(
                    tier.root,
                    filesystem=self._filesystem,
                    format=tier.file_format,
                    schema=tier.schema,
                    partitioning=ds.partitioning(tier.partitioning, flavor="hive"),
                )
        except FileNotFoundError:
            self._check_bucket()
            return self._rows_schema(tier).empty_table()
        except OSError as exc:
            if _vanished(exc):
                raise FileNotFoundError(str(exc)) from exc
            raise self._unavailable(exc) from exc
        conditions = []
        if table is not None:
            conditions.append(ds.field("table_name") == table)
        if dt_from is not None:
            if "month" in tier.partitioning.names:
                conditions.append(ds.field("month") >= dt_from[:7])
            conditions.append(ds.field("dt") >= dt_from)
        if dt_to is not None:
            if "month" in tier.partitioning.names:
                conditions.append(ds.field("month") <= dt_to[:7])
            conditions.append(ds.field("dt") <= dt_to)
        partitions = _all_of(conditions)
        expression = partitions if item_key is None else _all_of([*conditions, ds.field("item_key") == item_key])
        try:
            if tier is self._fresh:
                return self._fresh_rows(dataset, expression, partitions, reading or _FreshReading())
            return dataset.to_table(filter=expression, use_threads=False)
        except FileNotFoundError:
            raise
        except pa.ArrowInvalid as exc:
            logger.error("unreadable audit records under s3://%s/: %s", tier.root, exc)
            raise QueryError("an object among the audit records is not readable as audit records") from exc
        except OSError as exc:
            if _vanished(exc):
                raise FileNotFoundError(str(exc)) from exc
            raise self._unavailable(exc) from exc

    def _rows_schema(self, tier: _Tier) -> pa.Schema:
        """The columns a tier's rows are read with: the fresh tier's with their object's `$path`."""
        return tier.schema.append(_PATH) if tier is self._fresh else tier.schema

    def _fresh_rows(
        self,
        dataset: ds.Dataset,
        expression: ds.Expression | None,
        partitions: ds.Expression | None,
        reading: _FreshReading,
    ) -> pa.Table:
        """The fresh objects' rows, object by object, each with its object's `s3://` path (`$path`, as Athena names
        it: GET /audit prefers the copies reconciliation wrote, so it reads theirs whatever key they name, as its SQL
        does). One that compaction deleted since the listing is left out (`reading.vanished`): its rows were in a
        compacted file before it was deleted, and the compacted tier is read after this one, or in a `contested-`
        object, which `read` then looks for (starting over instead, a read could lose that race at every attempt while
        compaction deletes a backlog)."""
        tables = [self._rows_schema(self._fresh).empty_table()]
        for fragment in dataset.get_fragments(filter=partitions):
            if reading.besides is not None and (
                not is_contested_key(fragment.path) or f"s3://{fragment.path}" in reading.besides
            ):
                continue
            wanted = partitions if is_backfill_key(fragment.path) else expression
            try:
                rows = fragment.to_table(schema=dataset.schema, filter=wanted, use_threads=False)
                tables.append(
                    rows.append_column(_PATH, pa.array([f"s3://{fragment.path}"] * rows.num_rows, pa.string()))
                )
            except OSError as exc:
                if not _vanished(exc):
                    raise
                logger.info("a fresh audit object went away during a read (compaction folded it): %s", exc)
                reading.vanished = True
        return pa.concat_tables(tables)

    def _compacted_dataset(self, table: str | None, dt_from: str | None, dt_to: str | None) -> ds.Dataset:
        """The compacted files of `table` in the months from `dt_from` to `dt_to`, each with its footer read once and
        kept: a file never changes (a new one replaces it), so a lookup fetches only the row groups it needs."""
        tier = self._compacted
        folder = f"{tier.root}/table_name={quote(table, safe='')}" if table is not None else tier.root
        selector = pafs.FileSelector(folder, recursive=True, allow_not_found=True)
        fragments = []
        for info in self._filesystem.get_file_info(selector):
            period = compacted_period_of(info.path, f"{tier.root}/")
            if info.type != pafs.FileType.File or period is None:
                continue
            month = period[1][:7]
            if (dt_from is not None and month < dt_from[:7]) or (dt_to is not None and month > dt_to[:7]):
                continue
            fragments.append(self._footers.fragment(info.path, info.size, unquote(period[0]), month))
        return ds.FileSystemDataset(fragments, tier.schema, tier.file_format, self._filesystem)

    def _unavailable(self, exc: OSError) -> QueryUnavailableError:
        logger.warning("cannot read s3://%s/: %s", self._bucket, exc)
        return QueryUnavailableError("the audit records cannot be read right now")

    def _check_bucket(self) -> None:
        """Nothing under the prefix: tell an empty history from a bucket that does not exist."""
        try:
            info = self._filesystem.get_file_info(self._bucket)
        except OSError as exc:
            raise self._unavailable(exc) from exc
        if info.type == pafs.FileType.NotFound:
            logger.error("the audit bucket %s does not exist", self._bucket)
            raise QueryError("the audit records' bucket does not exist")


class _FooterCache:
    """Parquet fragments with their footers read, by path and size; the least recently used go first."""

    def __init__(self, filesystem: pafs.FileSystem, file_format: ds.ParquetFileFormat) -> None:
        self._filesystem = filesystem
        self._format = file_format
        self._fragments: OrderedDict[tuple[str, int], ds.ParquetFileFragment] = OrderedDict()
        self._lock = threading.Lock()

    def fragment(self, path: str, size: int, table: str, month: str) -> ds.ParquetFileFragment:
        with self._lock:
            cached = self._fragments.get((path, size))
            if cached is not None:
                self._fragments.move_to_end((path, size))
                return cached
        partition = (ds.field("table_name") == table) & (ds.field("month") == month)
        fragment = self._format.make_fragment(path, self._filesystem, partition_expression=partition, file_size=size)
        fragment.ensure_complete_metadata()
        with self._lock:
            self._fragments[(path, size)] = fragment
            while len(self._fragments) > MAX_CACHED_FOOTERS:
                self._fragments.popitem(last=False)
        return fragment


@dataclass(frozen=True)
class _Tier:
    root: str
    file_format: ds.FileFormat
    schema: pa.Schema
    partitioning: pa.Schema


def _all_of(conditions: Sequence[ds.Expression]) -> ds.Expression | None:
    """The conjunction of `conditions`; None (everything) for none."""
    expression = None
    for condition in conditions:
        expression = condition if expression is None else expression & condition
    return expression


def _vanished(exc: OSError) -> bool:
    """An S3 read of an object that no longer exists (pyarrow reports it as an OSError with S3's code)."""
    text = str(exc)
    return any(sign in text for sign in ("NoSuchKey", "NO_SUCH_KEY", "RESOURCE_NOT_FOUND", "does not exist"))


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with Athena's `json_format` and `slice`, so the shared SQL runs as it is, and Athena's time
    zone, UTC, whatever the machine's (`current_date` is the UTC day, as the audit's days are). It reads only what is
    registered with it: no file, no extension, and its configuration locked."""
    connection = duckdb.connect(config={"enable_external_access": False})
    connection.execute("SET GLOBAL TimeZone = 'UTC'")  # for its cursors too; once ICU (built in) is loaded
    connection.execute("SET lock_configuration = true")
    connection.execute("CREATE MACRO json_format(document) AS CAST(document AS VARCHAR)")
    connection.execute("CREATE MACRO slice(items, start, length) AS list_slice(items, start, start + length - 1)")
    return connection


class DuckDBQueryRunner:
    """QueryEngine: DuckDB over the audit records that pyarrow reads from S3 for each query."""

    def __init__(self, objects: AuditObjects, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self._objects = objects
        self._connection = connect()
        self._timeout = timeout_seconds
        self._lock = threading.Lock()
        self._reads = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_READS, thread_name_prefix="audit-read")

    @classmethod
    def from_environment(cls) -> DuckDBQueryRunner:
        """A runner on $AUDIT_BUCKET/$AUDIT_PREFIX, through $AWS_ENDPOINT_URL when set."""
        return cls(AuditObjects.from_environment(), number("QUERY_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS))

    def fetch_page(self, query: AuditQuery, token: PageToken | None) -> AuditPage:
        if token is not None and token.after is None:
            raise InvalidRequestError("next_token", "is not a token of this query engine")
        deadline = time.monotonic() + self._timeout
        return collect_page(
            query,
            token,
            lambda window, after, limit: self._entries(window, after, limit, deadline),
            datetime.now(UTC),
        )

    def _entries(
        self, query: AuditQuery, after: Position | None, limit: int, deadline: float
    ) -> list[dict[str, object]]:
        """At most `limit` entries of `query` after the position `after`, newest first, by `deadline`."""
        reading = self._reads.submit(
            self._objects.read,
            query.table,
            dt_from=query.since[:10] if query.since else None,
            dt_to=query.until[:10] if query.until else None,
            item_key=query.key,
        )
        try:
            tiers = reading.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeoutError:
            reading.cancel()  # a read still queued never starts; one under way ends on its own
            raise QueryTimeoutError(f"reading the audit records took longer than {self._timeout:g} s") from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise QueryTimeoutError(f"reading the audit records took longer than {self._timeout:g} s")
        relations = Relations(compacted=f"compacted_{uuid.uuid4().hex}", fresh=f"fresh_{uuid.uuid4().hex}")
        sql, parameters = build_audit_sql(query, relations, after=after, limit=limit)
        with self._lock:
            cursor = self._connection.cursor()
        cursor.register(relations.compacted, tiers.compacted)
        cursor.register(relations.fresh, tiers.fresh)
        timer = threading.Timer(remaining, cursor.interrupt)
        timer.start()
        try:
            rows = cursor.execute(sql, parameters).fetchall()
        except duckdb.InterruptException:
            raise QueryTimeoutError(f"the query did not finish within {self._timeout:g} s") from None
        except duckdb.Error as exc:
            logger.error("DuckDB query failed: %s: %s", type(exc).__name__, exc)
            raise QueryError("the query engine failed") from exc
        finally:
            timer.cancel()
            cursor.close()
        return [row_to_entry(dict(zip(ENTRY_COLUMNS, row, strict=True))) for row in rows]


class TrailFiles:
    """The raw trail as the CloudTrail table's rows, read file by file from S3 (as Athena's CloudTrail table does,
    with each row's `"$path"`, `region` and `date`); a file that is not a readable CloudTrail log is left out and
    named with its reason, never raised."""

    def __init__(self, filesystem: pafs.FileSystem, max_file_bytes: int = MAX_TRAIL_FILE_BYTES) -> None:
        self._filesystem = filesystem
        self._max_file_bytes = max_file_bytes

    def read(self, paths: Sequence[str]) -> tuple[pa.Table, dict[str, str]]:
        """The rows of the files at `paths` (`s3://bucket/AWSLogs/.../CloudTrail/<region>/<yyyy>/<MM>/<dd>/<name>`),
        and the unreadable files' reasons."""
        tables = [TRAIL_SCHEMA.empty_table()]
        unreadable: dict[str, str] = {}
        for path in paths:
            parts = path.removeprefix("s3://").split("/")
            try:
                region, date = parts[-5], "/".join(parts[-4:-1])
                info = self._filesystem.get_file_info(path.removeprefix("s3://"))
                if info.size is not None and info.size > self._max_file_bytes:
                    raise CorruptTrailFileError(f"it is {info.size} bytes, past the bound of {self._max_file_bytes}")
                with self._filesystem.open_input_stream(path.removeprefix("s3://"), compression=None) as stream:
                    body = stream.read()
                tables.append(trail_rows(read_trail_file(body, self._max_file_bytes), path, region, date))
            except CorruptTrailFileError as exc:
                unreadable[path] = str(exc)
            except (IndexError, pa.ArrowException) as exc:
                unreadable[path] = f"its events do not fit the CloudTrail table: {type(exc).__name__}"
            except OSError as exc:
                if not _vanished(exc):
                    raise QueryUnavailableError("the trail's files cannot be read right now") from exc
                unreadable[path] = "it was deleted while being read"
        return pa.concat_tables(tables), unreadable


class DuckDBTrailEngine:
    """TrailEngine for the local stack: the reconcile SQL on DuckDB over the day's trail files and audit records."""

    name = "duckdb"

    def __init__(self, objects: AuditObjects, trail: TrailFiles) -> None:
        self._objects = objects
        self._trail = trail
        self._connection = connect()

    @classmethod
    def from_environment(cls) -> DuckDBTrailEngine:
        filesystem = s3_filesystem(os.environ.get("AWS_ENDPOINT_URL"))
        objects = AuditObjects(filesystem, setting("AUDIT_BUCKET"), audit_prefix(), compacted_prefix())
        return cls(objects, TrailFiles(filesystem))

    def tally(self, window: ReconcileWindow, trail_files: Sequence[str], running: str | None = None) -> EngineResult:
        """The window's tallies, read in this process (no query outlives a run, so `running` is never given one)."""
        trail, unreadable = self._trail.read(trail_files)
        tiers = self._objects.read(dt_from=window.day, dt_to=window.day)
        suffix = uuid.uuid4().hex
        relations = ReconcileRelations(f"trail_{suffix}", f"compacted_{suffix}", f"fresh_{suffix}")
        sql, parameters = build_reconcile_sql(window, relations)
        cursor = self._connection.cursor()
        try:
            cursor.register(relations.trail, trail)
            cursor.register(relations.compacted, tiers.compacted)
            cursor.register(relations.fresh, tiers.fresh)
            rows = cursor.execute(sql, parameters).fetchall()
        except duckdb.Error as exc:
            logger.error("DuckDB reconcile query failed: %s: %s", type(exc).__name__, exc)
            raise QueryError("the reconcile query failed") from exc
        finally:
            cursor.close()
        return EngineResult([read_tally(row) for row in rows], unreadable)
