"""Plays the Glue crawler: registers new `table_name=/dt=` partitions of the audit prefix in moto's Glue catalog,
and adds columns that records carry but the table does not (as `string`), the way a crawler that updates the
table in the database would. It never removes anything.
"""

from __future__ import annotations

import copy
import gzip
import json
import logging
from typing import Any

from deutzia_local.periodic import Periodic

logger = logging.getLogger("deutzia.crawler")


class LocalCrawler:
    """Crawls s3://<bucket>/<prefix> into the catalog table `<database>.<table>` every `interval` seconds."""

    def __init__(
        self, glue: Any, s3: Any, bucket: str, prefix: str, database: str, table: str, interval: float
    ) -> None:
        self._glue = glue
        self._s3 = s3
        self._bucket = bucket
        self._prefix = prefix
        self._database = database
        self._table = table
        self._known: set[tuple[str, str]] = set()
        self._schedule = Periodic("glue-crawler", interval, self.crawl, logger)

    def start(self) -> None:
        self._schedule.start()

    def stop(self) -> None:
        self._schedule.stop()

    def crawl(self) -> list[tuple[str, str]]:
        """One crawl; the partitions it registered."""
        found = self._partitions_in_s3()
        if not self._known:
            self._known = self._partitions_in_catalog()
        new = sorted(set(found) - self._known)
        if not new:
            return []
        table = self._glue.get_table(DatabaseName=self._database, Name=self._table)["Table"]
        storage = table["StorageDescriptor"]
        self._add_new_columns(table, [found[partition] for partition in new])
        for start in range(0, len(new), 100):
            inputs = []
            for table_name, dt in new[start : start + 100]:
                partition_storage = copy.deepcopy(storage)
                partition_storage["Location"] = f"s3://{self._bucket}/{self._prefix}table_name={table_name}/dt={dt}/"
                inputs.append({"Values": [table_name, dt], "StorageDescriptor": partition_storage})
            self._glue.batch_create_partition(
                DatabaseName=self._database, TableName=self._table, PartitionInputList=inputs
            )
        self._known |= set(new)
        return new

    def _partitions_in_s3(self) -> dict[tuple[str, str], str]:
        """Each partition found, with one of its objects."""
        partitions: dict[tuple[str, str], str] = {}
        paginator = self._s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self._bucket, Prefix=self._prefix):
            for item in page.get("Contents", []):
                parts = item["Key"][len(self._prefix) :].split("/")
                if len(parts) == 3 and parts[0].startswith("table_name=") and parts[1].startswith("dt="):
                    partitions.setdefault((parts[0][len("table_name=") :], parts[1][len("dt=") :]), item["Key"])
        return partitions

    def _partitions_in_catalog(self) -> set[tuple[str, str]]:
        paginator = self._glue.get_paginator("get_partitions")
        known = set()
        for page in paginator.paginate(DatabaseName=self._database, TableName=self._table):
            known |= {(p["Values"][0], p["Values"][1]) for p in page["Partitions"]}
        return known

    def _add_new_columns(self, table: dict[str, Any], sample_keys: list[str]) -> None:
        columns = list(table["StorageDescriptor"]["Columns"])
        known = {column["Name"] for column in columns} | {key["Name"] for key in table.get("PartitionKeys", [])}
        added = []
        for key in sample_keys:
            body = gzip.decompress(self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read())
            first_line = body.split(b"\n", 1)[0]
            for name in json.loads(first_line) if first_line else {}:
                if name not in known:
                    known.add(name)
                    added.append({"Name": name, "Type": "string"})
        if not added:
            return
        table_input: dict[str, Any] = {
            name: table[name]
            for name in ("Name", "Description", "Owner", "Retention", "PartitionKeys", "TableType", "Parameters")
            if name in table
        }
        table_input["StorageDescriptor"] = {**table["StorageDescriptor"], "Columns": columns + added}
        self._glue.update_table(DatabaseName=self._database, TableInput=table_input)
        logger.info("added columns %s to %s.%s", [c["Name"] for c in added], self._database, self._table)
