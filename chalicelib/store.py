"""Where audit records and quarantined Kinesis records are written: the AuditStore port and its S3 adapter.

The only module of the ingest path that talks to AWS. It writes what it is given under the key it is given;
building keys and bodies is `records`' job. Failures surface as StoreError, so the record is retried.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.config import setting
from chalicelib.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

# Every upload carries its checksum, which S3 verifies: a bucket under Object Lock refuses uploads without one, and
# SDKs before botocore 1.36 (Lambda's runtimes ship their own) send none unless asked. CRC32: zlib's, fast.
UPLOAD_CHECKSUM: Final = "CRC32"
# S3 user metadata travels as HTTP headers: ASCII only, 2 KB in all.
_MAX_REASON_BYTES = 1024


class AuditStore(Protocol):
    """Writes whole objects; writing the same key twice replaces the first."""

    def put_records(self, key: str, body: bytes) -> None: ...

    def put_quarantine(self, key: str, body: bytes, reason: str) -> None: ...


# Objects one ingest invocation writes at once (one per table and UTC day of its batch); the client keeps as many
# connections, so no write waits for another's.
MAX_CONCURRENT_WRITES = 16


class S3AuditStore:
    """AuditStore on the S3 bucket AUDIT_BUCKET."""

    def __init__(self, client: S3Client, bucket: str) -> None:
        self._client = client
        self._bucket = bucket

    @classmethod
    def from_environment(cls) -> S3AuditStore:
        """A store on $AUDIT_BUCKET, through $AWS_ENDPOINT_URL when boto3 finds it set."""
        return cls(
            boto3.client("s3", config=Config(max_pool_connections=MAX_CONCURRENT_WRITES)), setting("AUDIT_BUCKET")
        )

    @property
    def client(self) -> S3Client:
        return self._client

    @property
    def bucket(self) -> str:
        return self._bucket

    def put_records(self, key: str, body: bytes) -> None:
        self._put(key, body, {})

    def put_quarantine(self, key: str, body: bytes, reason: str) -> None:
        self._put(key, body, {"reason": ascii_metadata(reason)})

    def put_json(self, key: str, body: bytes) -> None:
        """A small JSON document (what the trail watch keeps), as the other writes: StoreError when it fails."""
        self._put(key, body, {}, "application/json")

    def _put(self, key: str, body: bytes, metadata: dict[str, str], content_type: str = "application/gzip") -> None:
        try:
            self._client.put_object(
                Bucket=self._bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=metadata,
                ChecksumAlgorithm=UPLOAD_CHECKSUM,
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "Unknown")
            raise StoreError(f"S3 PutObject to {self._bucket}/{key} failed: {code}") from exc
        except BotoCoreError as exc:
            raise StoreError(f"S3 PutObject to {self._bucket}/{key} failed: {type(exc).__name__}") from exc


def ascii_metadata(text: str) -> str:
    """Text made safe for an S3 metadata value: printable ASCII, escapes for the rest, bounded in length."""
    escaped = text.encode("ascii", "backslashreplace").decode("ascii")
    printable = "".join(char if " " <= char <= "~" else " " for char in escaped)
    return printable[:_MAX_REASON_BYTES]
