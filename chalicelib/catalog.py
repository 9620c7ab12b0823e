"""The tables GET /tables lists: the audited tables by name, or, when any table is audited (`*`), every table the
audit bucket holds records of (the `table_name=<t>/` folders of both tiers). Errors name no bucket or path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import unquote

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.errors import QueryUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

logger = logging.getLogger("deutzia.catalog")

# Tables listed at most (a listing of folders, one page of 1,000 per tier and more as needed).
MAX_TABLES = 10_000


def table_names(s3: S3Client, bucket: str, prefixes: list[str], audited: frozenset[str] | None) -> list[str]:
    """The audited tables, sorted: `audited` itself, or the tables with records under `prefixes` when it is None."""
    if audited is not None:
        return sorted(audited)
    found: set[str] = set()
    try:
        for prefix in prefixes:
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=f"{prefix}table_name=", Delimiter="/"
            )
            for page in pages:
                for entry in page.get("CommonPrefixes", []):
                    found.add(unquote(entry["Prefix"][len(prefix) + len("table_name=") :].rstrip("/")))
                if len(found) >= MAX_TABLES:
                    break
    except (ClientError, BotoCoreError) as exc:
        logger.warning("cannot list the audited tables: %s", exc)
        raise QueryUnavailableError("the audited tables cannot be listed right now") from exc
    found.discard("__HIVE_DEFAULT_PARTITION__")
    return sorted(found)[:MAX_TABLES]
