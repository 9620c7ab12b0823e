"""GET /audit on DuckDB, for the local stack: the same SQL as Athena over the same S3 objects.

pyarrow reads the gzip JSON Lines from S3 (its own client; DuckDB's httpfs cannot be installed here), as a
hive-partitioned dataset typed by the schema, so `table_name` and `dt` prune objects before any is read, as Athena's
partitions do; DuckDB then runs the shared SQL over that Arrow data. Every query lists the objects afresh, so new
records show at once. The deadline covers the whole request: reads run on a small pool of their own (pyarrow's
threaded scans deadlock once concurrent scans fill its CPU pool, so each scan runs on one thread), and a read that
outlives it is answered 504 while later requests go on. Errors name no path or engine internals. Local use only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from typing import Any

import boto3
import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.json as pajson
from pyarrow import fs as pafs

from chalicelib.bounds import MAX_LINE_BYTES
from chalicelib.config import audit_prefix, number, setting
from chalicelib.errors import InvalidRequestError, QueryError, QueryTimeoutError, QueryUnavailableError
from chalicelib.query import (
    ENTRY_COLUMNS,
    AuditPage,
    AuditQuery,
    PageToken,
    build_audit_sql,
    encode_page_token,
    position_of,
    row_to_entry,
)
from chalicelib.schema import AUDIT_COLUMNS, PARTITION_COLUMNS

logger = logging.getLogger("deutzia.duckdb")

DEFAULT_TIMEOUT_SECONDS = 25.0
# pyarrow's JSON reader needs each line whole within one block: room for the longest line ingest writes.
READ_BLOCK_BYTES = 2 * MAX_LINE_BYTES
# Scans that may run at once; a request waits its turn within its own deadline.
MAX_CONCURRENT_READS = 4
_ARROW_TYPES = {
    "string": pa.string(),
    "int": pa.int32(),
    "boolean": pa.bool_(),
    "array<string>": pa.list_(pa.string()),
}
RECORD_SCHEMA = pa.schema([pa.field(column.name, _ARROW_TYPES[column.glue_type]) for column in AUDIT_COLUMNS])
PARTITION_SCHEMA = pa.schema([pa.field(column.name, pa.string()) for column in PARTITION_COLUMNS])


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


class AuditObjects:
    """The audit records under s3://<bucket>/<prefix>, read as Arrow, pruned by partition."""

    def __init__(self, filesystem: pafs.FileSystem, bucket: str, prefix: str) -> None:
        self._filesystem = filesystem
        self._bucket = bucket
        self._root = f"{bucket}/{prefix.rstrip('/')}"
        self._format = ds.JsonFileFormat(
            parse_options=pajson.ParseOptions(explicit_schema=RECORD_SCHEMA, unexpected_field_behavior="ignore"),
            read_options=pajson.ReadOptions(block_size=READ_BLOCK_BYTES),
        )

    def read(self, table: str | None = None, dt_from: str | None = None, dt_to: str | None = None) -> pa.Table:
        """The records of `table` (all tables when None) with `dt_from <= dt <= dt_to`; QueryUnavailableError or
        QueryError when the bucket cannot be read."""
        try:
            dataset = ds.dataset(
                self._root,
                filesystem=self._filesystem,
                format=self._format,
                schema=pa.unify_schemas([RECORD_SCHEMA, PARTITION_SCHEMA]),
                partitioning=ds.partitioning(PARTITION_SCHEMA, flavor="hive"),
            )
        except FileNotFoundError:
            self._check_bucket()
            return pa.Table.from_batches([], schema=pa.unify_schemas([RECORD_SCHEMA, PARTITION_SCHEMA]))
        except OSError as exc:
            raise self._unavailable(exc) from exc
        conditions = []
        if table is not None:
            conditions.append(ds.field("table_name") == table)
        if dt_from is not None:
            conditions.append(ds.field("dt") >= dt_from)
        if dt_to is not None:
            conditions.append(ds.field("dt") <= dt_to)
        expression = None
        for condition in conditions:
            expression = condition if expression is None else expression & condition
        try:
            return dataset.to_table(filter=expression, use_threads=False)
        except pa.ArrowInvalid as exc:
            logger.error("unreadable audit records under s3://%s/: %s", self._root, exc)
            raise QueryError("an object among the audit records is not readable as audit records") from exc
        except OSError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: OSError) -> QueryUnavailableError:
        logger.warning("cannot read s3://%s/: %s", self._root, exc)
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


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with Athena's `json_format`, so the shared SQL runs as it is. It reads only what is
    registered with it: no file, no extension, and its configuration locked."""
    connection = duckdb.connect(config={"enable_external_access": False, "lock_configuration": True})
    connection.execute("CREATE MACRO json_format(document) AS CAST(document AS VARCHAR)")
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
        filesystem = s3_filesystem(os.environ.get("AWS_ENDPOINT_URL"))
        objects = AuditObjects(filesystem, setting("AUDIT_BUCKET"), audit_prefix())
        return cls(objects, number("QUERY_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS))

    def fetch_page(self, query: AuditQuery, token: PageToken | None) -> AuditPage:
        if token is not None and token.after is None:
            raise InvalidRequestError("next_token", "is not a token of this query engine")
        deadline = time.monotonic() + self._timeout
        reading = self._reads.submit(
            self._objects.read,
            query.table,
            dt_from=query.since[:10] if query.since else None,
            dt_to=query.until[:10] if query.until else None,
        )
        try:
            records = reading.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeoutError:
            reading.cancel()  # a read still queued never starts; one under way ends on its own
            raise QueryTimeoutError(f"reading the audit records took longer than {self._timeout:g} s") from None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise QueryTimeoutError(f"reading the audit records took longer than {self._timeout:g} s")
        relation = f"audit_{uuid.uuid4().hex}"
        after = token.after if token is not None else None
        sql, parameters = build_audit_sql(query, relation, after=after, limit=query.limit + 1)
        with self._lock:
            cursor = self._connection.cursor()
        cursor.register(relation, records)
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
        entries = [row_to_entry(dict(zip(ENTRY_COLUMNS, row, strict=True))) for row in rows[: query.limit]]
        next_token = None
        if len(rows) > query.limit:
            next_token = encode_page_token(PageToken(query.fingerprint(), after=position_of(entries[-1])))
        return AuditPage(entries, next_token)
