"""Runs compaction on the audit bucket: lists both tiers, folds each planned unit into one Parquet file, and leaves
the unit's inputs in place, named in a note (`superseded`), until a later run finds their grace over and deletes
them: a query that lists the tiers while a file replaces its inputs sees every row in one tier or both, whatever
order it lists them in, as long as it takes less than the grace. Nothing is deleted before the new file is stored
and checked, so a crash at any step loses nothing, and what it leaves twice (the new file beside its inputs) readers
de-duplicate and the next run folds in.

A run takes units oldest first while the time left covers the next one, so a backlog takes a few runs; of a day
with more fresh objects than one invocation can hold, it folds what it can and refuses the rest, loudly
(CompactionRefusedError after the others are done), for the next runs. Runs come every few minutes, so the days
still open are folded in as they grow, and the fresh tier stays minutes deep.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.columnar import COMPACTED_FILE_SCHEMA, fresh_records
from chalicelib.compaction import (
    CompactionUnit,
    StoredObject,
    compact_to_parquet,
    contested_objects,
    fresh_partition_of,
    plan_compaction,
)
from chalicelib.config import LAMBDA_MAX_SECONDS, audit_prefix, compacted_prefix, number, setting
from chalicelib.errors import DeutziaError, StoreError
from chalicelib.superseded import (
    NOTE_PREFIX,
    Retirement,
    Superseded,
    grace_seconds_setting,
    retirement,
    unheld,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger("deutzia.compaction")

# What one invocation holds, in input bytes (gzip JSON and Parquet, as stored) per unit: decoding, sorting and
# de-duplicating took up to 56 times the stored size in memory (well-compressed records, 2 KB per row at the peak;
# `make bench` measures it), so a unit may have the function's memory / 64 of input.
MEMORY_PER_INPUT_BYTE = 64
DEFAULT_MEMORY_MB = 10240
# Throughput assumed when deciding whether a unit still fits in the time left (measured: several times faster).
ASSUMED_BYTES_PER_SECOND = 4 * 1024 * 1024
SECONDS_PER_OBJECT = 0.01
# Time kept in reserve after the last unit, for writing and deleting.
RESERVE_SECONDS = 60.0
CONCURRENT_READS = 10  # boto3's connection pool
# A day closes this long after it ended (COMPACTION_SETTLE_SECONDS overrides it).
DEFAULT_SETTLE_SECONDS = 2 * 3600
_DELETE_BATCH = 1000
MAX_NAMED_CALLS = 100  # event ids a warning names


class _InputGoneError(DeutziaError):
    """An input was deleted after it was listed: another run compacted it (its rows are in that run's file)."""


class CompactionRefusedError(DeutziaError):
    """A day had more fresh objects than one invocation holds: the rest wait for the next runs. If it lasts, the
    table needs a bigger engine (see the README). `report` says what the run did all the same."""

    def __init__(self, message: str, report: CompactionReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class CompactionReport:
    """What one run did: files written, inputs folded in, rows in and out, what is left; inputs deleted once their
    grace was over, and those still in it."""

    files: list[str] = field(default_factory=list)
    inputs: int = 0
    deleted: int = 0
    waiting: int = 0
    rows_in: int = 0
    rows_out: int = 0
    contested: int = 0
    overruled: int = 0
    deferred: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def contradicting(self) -> int:
        """Copies of records that said something else of their call than another copy, or than the trail's own."""
        return self.contested + self.overruled

    def summary(self) -> str:
        contradicting = (
            f"; copies that say something else of their call, kept aside for reconciliation: {self.contested:,}, "
            f"replaced by the trail's own: {self.overruled:,}"
            if self.contradicting
            else ""
        )
        return (
            f"compacted {len(self.files)} file(s) from {self.inputs} object(s): {self.rows_in:,} rows in, "
            f"{self.rows_out:,} out (duplicates dropped: {self.rows_in - self.rows_out - self.contradicting:,}"
            f"{contradicting}); {len(self.deferred)} left for the next run; {len(self.refused)} refused; "
            f"replaced objects deleted: {self.deleted}, kept for queries still reading them: {self.waiting}"
        )


def last_closed_day(now: datetime, settle_seconds: float) -> str:
    """The latest UTC day that ended at least `settle_seconds` before `now`."""
    return (now.astimezone(UTC) - timedelta(seconds=settle_seconds) - timedelta(days=1)).date().isoformat()


def last_closed_day_now() -> str:
    """The latest UTC day that ended $COMPACTION_SETTLE_SECONDS ago (2 h by default: what CloudWatch Logs and Kinesis
    deliver late comes first); the days after it are open, each kept in day files of its own until it closes."""
    return last_closed_day(datetime.now(UTC), number("COMPACTION_SETTLE_SECONDS", DEFAULT_SETTLE_SECONDS))


def max_input_bytes_setting() -> int:
    """The input one unit may have: $COMPACTION_MAX_INPUT_BYTES, or else the function's memory (Lambda's
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE, in MB) / 64."""
    memory_mb = number("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", DEFAULT_MEMORY_MB)
    return int(number("COMPACTION_MAX_INPUT_BYTES", memory_mb * 1024 * 1024 / MEMORY_PER_INPUT_BYTE))


def time_left_of(context: object) -> Callable[[], float]:
    """Seconds left in a Lambda invocation, from its context; a context without a clock gives a full 15 minutes."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        started = time.monotonic()
        return lambda: LAMBDA_MAX_SECONDS - (time.monotonic() - started)
    return lambda: float(remaining()) / 1000


class S3Compactor:
    """Compaction of s3://<bucket>/<fresh prefix> into s3://<bucket>/<compacted prefix>."""

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        fresh_prefix: str,
        compacted_prefix: str,
        max_input_bytes: int | None = None,
        row_group_rows: int | None = None,
        grace_seconds: float | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._fresh_prefix = fresh_prefix
        self._compacted_prefix = compacted_prefix
        self._max_input_bytes = max_input_bytes if max_input_bytes is not None else max_input_bytes_setting()
        self._row_group_rows = row_group_rows
        self._grace_seconds = grace_seconds if grace_seconds is not None else grace_seconds_setting()
        self._now = clock or (lambda: datetime.now(UTC))

    @classmethod
    def from_environment(cls) -> S3Compactor:
        """On $AUDIT_BUCKET: $AUDIT_PREFIX into $COMPACTED_PREFIX, at most `max_input_bytes_setting()` a unit, replaced
        objects kept `grace_seconds_setting()`."""
        return cls(boto3.client("s3"), setting("AUDIT_BUCKET"), audit_prefix(), compacted_prefix())

    def run(
        self, closed_day: str, remaining_seconds: Callable[[], float], report: CompactionReport | None = None
    ) -> CompactionReport:
        """Delete what earlier runs replaced once its grace is over, then compact every unit due up to `closed_day`
        that fits in the time left, into `report` (a new one unless given: a caller's own says what the run did even
        when it fails); CompactionRefusedError at the end when fresh objects were left for being more than one
        invocation holds."""
        report = report if report is not None else CompactionReport()
        fresh, compacted, notes = self._listing()
        retired = self._retire(fresh + compacted, notes, report)
        plan = plan_compaction(
            unheld(fresh, retired),
            unheld(compacted, retired),
            self._fresh_prefix,
            self._compacted_prefix,
            closed_day,
            self._max_input_bytes,
        )
        report.refused = [unit.describe() for unit in plan.refused]
        for unit in plan.refused:
            logger.error(
                "compaction refused %s: beyond the %d bytes of input one invocation holds, so they wait for the next "
                "runs; if this lasts, compact the table with Athena or a Glue job (see the README)",
                unit.describe(),
                self._max_input_bytes,
            )
        written: list[Superseded] = []
        for position, unit in enumerate(plan.units):
            needed = unit.input_bytes / ASSUMED_BYTES_PER_SECOND + len(unit.inputs) * SECONDS_PER_OBJECT
            if needed + RESERVE_SECONDS > remaining_seconds():
                report.deferred = [later.describe() for later in plan.units[position:]]
                logger.info("compaction stops for lack of time; %d unit(s) left", len(report.deferred))
                break
            try:
                written.append(self.compact(unit, report))
            except _InputGoneError as exc:
                logger.info("%s; %s is left to the next run", exc, unit.describe())
                report.deferred.append(unit.describe())
        pending = [note for note in notes if note not in retired.settled] + written
        if any(self._is_due(note) for note in pending):  # a grace shorter than the run
            fresh, compacted, notes = self._listing()
            retired = self._retire(fresh + compacted, notes, report)
            report.waiting = len(retired.held)
        else:
            report.waiting = len(retired.held) + sum(len(note.objects) for note in written)
        logger.info(report.summary())
        if plan.refused:
            raise CompactionRefusedError(
                f"compaction refused {len(plan.refused)} partition(s): {report.refused}", report
            )
        return report

    def compact(self, unit: CompactionUnit, report: CompactionReport) -> Superseded:
        """One unit: read its inputs, write the new file and check it, then the note naming the inputs it replaced
        (deleted once their grace is over)."""
        started = time.monotonic()
        tables = self._read_all(unit)
        records = pa.concat_tables(tables) if tables else COMPACTED_FILE_SCHEMA.empty_table()
        from_trail = sum(table.num_rows for table in tables[: len(unit.from_trail)])  # the first inputs
        sizing = {"target_rows": self._row_group_rows} if self._row_group_rows else {}
        body, contested, overruled = compact_to_parquet(records, from_trail, **sizing)
        key = unit.output_key(self._compacted_prefix)
        rows_out = pq.ParquetFile(io.BytesIO(body)).metadata.num_rows
        kept = {key}
        for contested_key, contested_body in contested_objects(self._fresh_prefix, unit.table, contested).items():
            self._put_checked(contested_key, contested_body, "application/gzip")
            kept.add(contested_key)
        if contested.num_rows:
            logger.warning(
                "compaction of %s met %d copies of records that say something else of their call than the copy kept "
                "(one of them did not come from CloudTrail): kept beside it in %s, until reconciliation restores the "
                "trail's own",
                unit.describe(),
                contested.num_rows,
                sorted(kept - {key}),
            )
        report.contested += contested.num_rows  # counted once stored, whatever comes of the rest
        report.overruled += overruled.num_rows
        if overruled.num_rows:
            logger.warning(
                "compaction of %s replaced %d copies of records that say something else of their call than the trail's "
                "own records (one came through the log group, not from CloudTrail), of the calls %s",
                unit.describe(),
                overruled.num_rows,
                sorted(set(overruled.column("event_id").to_pylist()))[:MAX_NAMED_CALLS],
            )
        self._put_checked(key, body)
        replaced = Superseded(key, unit.table, self._now(), tuple(item for item in unit.inputs if item.key not in kept))
        self._put_checked(replaced.note_key, replaced.encode(), "application/json")
        report.files.append(key)
        report.inputs += len(unit.inputs)
        report.rows_in += records.num_rows
        report.rows_out += rows_out
        logger.info(
            "compacted %s into %s: %d rows, %d bytes, %.1f s",
            unit.describe(),
            key,
            rows_out,
            len(body),
            time.monotonic() - started,
        )
        return replaced

    def _listing(self) -> tuple[list[StoredObject], list[StoredObject], list[Superseded]]:
        """Both tiers' objects and the notes of what earlier runs replaced."""
        notes = [self._note(item.key) for item in self._list(NOTE_PREFIX)]
        fresh, compacted = list(self._list(self._fresh_prefix)), list(self._list(self._compacted_prefix))
        return fresh, compacted, [note for note in notes if note is not None]

    def _note(self, key: str) -> Superseded | None:
        try:
            return Superseded.decode(self._get(key))
        except _InputGoneError:
            return None  # settled by another run since it was listed
        except ValueError as exc:
            logger.error("compaction ignores %s: %s (the objects it names are folded again)", key, exc)
            return None

    def _is_due(self, note: Superseded) -> bool:
        return (self._now() - note.at).total_seconds() >= self._grace_seconds

    def _retire(self, listed: list[StoredObject], notes: list[Superseded], report: CompactionReport) -> Retirement:
        """Delete the objects whose grace is over, then their notes; what is still in its grace is held."""
        retired = retirement(notes, {item.key: item for item in listed}, self._now(), self._grace_seconds)
        if retired.settled:
            self._delete([*retired.delete, *(note.note_key for note in retired.settled)])
            report.deleted += len(retired.delete)
            logger.info(
                "deleted %d object(s) replaced at least %.0f s ago, named in %d note(s) under %s%s",
                len(retired.delete),
                self._grace_seconds,
                len(retired.settled),
                self._compacted_prefix,
                NOTE_PREFIX,
            )
        return retired

    def _read_all(self, unit: CompactionUnit) -> list[pa.Table]:
        with ThreadPoolExecutor(CONCURRENT_READS, thread_name_prefix="compaction-read") as pool:
            return list(pool.map(self._read, unit.inputs))

    def _read(self, item: StoredObject) -> pa.Table:
        body = self._get(item.key)
        partition = fresh_partition_of(item.key, self._fresh_prefix)
        if partition is not None:
            return fresh_records(body, partition[1])
        return pq.read_table(io.BytesIO(body), schema=COMPACTED_FILE_SCHEMA)

    def _list(self, prefix: str) -> Iterable[StoredObject]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield StoredObject(item["Key"], item["Size"], item["ETag"])
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"S3 ListObjectsV2 of {self._bucket}/{prefix} failed: {_reason(exc)}") from exc

    def _get(self, key: str) -> bytes:
        try:
            return self._client.get_object(Bucket=self._bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if _reason(exc) == "NoSuchKey":
                raise _InputGoneError(f"{key} was compacted by another run") from exc
            raise StoreError(f"S3 GetObject of {self._bucket}/{key} failed: {_reason(exc)}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 GetObject of {self._bucket}/{key} failed: {_reason(exc)}") from exc

    def _put_checked(self, key: str, body: bytes, content_type: str = "application/vnd.apache.parquet") -> None:
        """Store an object with its SHA-256 (S3 refuses a body that does not match it) and read its size back."""
        checksum = base64.b64encode(hashlib.sha256(body).digest()).decode()
        try:
            self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                ChecksumAlgorithm="SHA256",  # with the value: the header a bucket under Object Lock asks for
                ChecksumSHA256=checksum,
            )
            stored = self._client.head_object(Bucket=self._bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise StoreError(f"S3 PutObject to {self._bucket}/{key} failed: {_reason(exc)}") from exc
        if stored["ContentLength"] != len(body):
            raise StoreError(f"{self._bucket}/{key} holds {stored['ContentLength']} bytes, not the {len(body)} written")

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            try:
                response = self._client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
                )
            except (ClientError, BotoCoreError) as exc:
                raise StoreError(f"S3 DeleteObjects in {self._bucket} failed: {_reason(exc)}") from exc
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise StoreError(
                    f"S3 DeleteObjects in {self._bucket} failed for {len(errors)} object(s), "
                    f"first {first.get('Key')}: {first.get('Code')}"
                )


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__
