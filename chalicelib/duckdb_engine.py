"""GET /audit on DuckDB, for the local stack: the same SQL as Athena over the same S3 objects.

DuckDB scans the gzip JSON Lines itself through an fsspec filesystem on pyarrow's S3 client (its httpfs extension
cannot be installed here), with hive partitioning, so `table_name` and `dt` prune objects as Athena's partitions
do. One cursor per request; a timer interrupts a query that outlives the deadline. Local use only.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import boto3
import duckdb
from fsspec.implementations.arrow import ArrowFSWrapper
from pyarrow import fs as pafs

from chalicelib.config import audit_prefix, number, setting
from chalicelib.errors import ConfigError, InvalidRequestError, QueryError, QueryTimeoutError, QueryUnavailableError
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

DEFAULT_TIMEOUT_SECONDS = 25.0


class S3ArrowFileSystem(ArrowFSWrapper):  # type: ignore[misc]
    """pyarrow's S3 client as the fsspec filesystem DuckDB reads `s3://` paths through."""

    protocol = ("s3",)


def s3_filesystem(endpoint_url: str | None) -> S3ArrowFileSystem:
    """An S3 filesystem with boto3's credentials and region, through `endpoint_url` when given."""
    session = boto3.session.Session()
    credentials = session.get_credentials()
    options: dict[str, Any] = {"region": session.region_name or "us-east-1"}
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options.update(access_key=frozen.access_key, secret_key=frozen.secret_key, session_token=frozen.token)
    if endpoint_url:
        scheme, _, authority = endpoint_url.partition("://")
        options.update(endpoint_override=authority.rstrip("/"), scheme=scheme)
    return S3ArrowFileSystem(pafs.S3FileSystem(**options))


def read_json_sql(bucket: str, prefix: str) -> str:
    """The `read_json` scan of every audit object, typed by the schema, partitions from the key."""
    columns = ", ".join(f"'{column.name}': '{column.duckdb_type}'" for column in AUDIT_COLUMNS)
    hive_types = ", ".join(f"'{column.name}': 'VARCHAR'" for column in PARTITION_COLUMNS)
    return (
        f"read_json('s3://{bucket}/{prefix}*/*/*.json.gz', format = 'newline_delimited', compression = 'gzip', "
        f"hive_partitioning = true, hive_types = {{{hive_types}}}, columns = {{{columns}}})"
    )


def connect(filesystem: S3ArrowFileSystem) -> duckdb.DuckDBPyConnection:
    """A connection that reads `s3://` through `filesystem` and has Athena's `json_format`, so the SQL runs as is."""
    connection = duckdb.connect()
    connection.register_filesystem(filesystem)
    connection.execute("CREATE MACRO json_format(document) AS CAST(document AS VARCHAR)")
    return connection


class DuckDBQueryRunner:
    """QueryEngine on an in-process DuckDB that scans the audit bucket on every query (new objects show at once)."""

    def __init__(
        self,
        filesystem: S3ArrowFileSystem,
        bucket: str,
        prefix: str,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> None:
        for name, value in (("AUDIT_BUCKET", bucket), ("AUDIT_PREFIX", prefix)):
            if "'" in value:
                raise ConfigError(f"environment variable {name} must not contain a quote")
        self._filesystem = filesystem
        self._bucket = bucket
        self._connection = connect(filesystem)
        self._relation = read_json_sql(bucket, prefix)
        self._timeout = timeout_seconds
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> DuckDBQueryRunner:
        """A runner on $AUDIT_BUCKET/$AUDIT_PREFIX, through $AWS_ENDPOINT_URL when set."""
        filesystem = s3_filesystem(os.environ.get("AWS_ENDPOINT_URL"))
        timeout = number("QUERY_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS)
        return cls(filesystem, setting("AUDIT_BUCKET"), audit_prefix(), timeout)

    def fetch_page(self, query: AuditQuery, token: PageToken | None) -> AuditPage:
        if token is not None and token.after is None:
            raise InvalidRequestError("next_token", "is not a token of this query engine")
        after = token.after if token is not None else None
        sql, parameters = build_audit_sql(query, self._relation, after=after, limit=query.limit + 1)
        with self._lock:
            cursor = self._connection.cursor()
        timer = threading.Timer(self._timeout, cursor.interrupt)
        timer.start()
        try:
            rows = cursor.execute(sql, parameters).fetchall()
        except duckdb.InterruptException:
            raise QueryTimeoutError(f"DuckDB query did not finish within {self._timeout:g} s") from None
        except duckdb.IOException as exc:
            if "No files found" in str(exc):
                self._check_bucket()
                rows = []
            else:
                raise QueryUnavailableError(f"DuckDB could not read the audit bucket: {exc}") from exc
        except duckdb.Error as exc:
            raise QueryError(f"DuckDB query failed: {type(exc).__name__}: {exc}") from exc
        finally:
            timer.cancel()
            cursor.close()
        entries = [row_to_entry(dict(zip(ENTRY_COLUMNS, row, strict=True))) for row in rows[: query.limit]]
        next_token = None
        if len(rows) > query.limit:
            next_token = encode_page_token(PageToken(query.fingerprint(), after=position_of(entries[-1])))
        return AuditPage(entries, next_token)

    def _check_bucket(self) -> None:
        """No objects matched: tell an empty history from a bucket that cannot be read (the glob hides errors)."""
        try:
            info = self._filesystem.fs.get_file_info(self._bucket)
        except OSError as exc:
            raise QueryUnavailableError(f"cannot read the audit bucket {self._bucket}: {exc}") from exc
        if info.type == pafs.FileType.NotFound:
            raise QueryError(f"the audit bucket {self._bucket} does not exist")
