"""The audit record's columns and their types: the one list that S3 lines, Glue, Athena and DuckDB share.

Everything that names a column (record building, the query engines, the Glue table) reads it from here, so the
stored records, the catalog and the queries cannot drift apart. No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One column: its Glue/Athena (Hive) type and the DuckDB type that reads the same JSON value."""

    name: str
    glue_type: str

    @property
    def duckdb_type(self) -> str:
        return _DUCKDB_TYPES[self.glue_type]


_DUCKDB_TYPES = {
    "string": "VARCHAR",
    "int": "INTEGER",
    "boolean": "BOOLEAN",
    "array<string>": "VARCHAR[]",
}

AUDIT_COLUMNS: tuple[Column, ...] = (
    Column("event_id", "string"),
    Column("item_index", "int"),
    Column("event_time", "string"),
    Column("event_name", "string"),
    Column("operation", "string"),
    Column("item_key", "string"),
    Column("attribute_names", "array<string>"),
    Column("read_only", "boolean"),
    Column("success", "boolean"),
    Column("error_code", "string"),
    Column("error_message", "string"),
    Column("principal_type", "string"),
    Column("principal_arn", "string"),
    Column("principal_id", "string"),
    Column("principal_name", "string"),
    Column("session_issuer_arn", "string"),
    Column("access_key_id", "string"),
    Column("account_id", "string"),
    Column("invoked_by", "string"),
    Column("source_ip", "string"),
    Column("user_agent", "string"),
    Column("aws_region", "string"),
    Column("recipient_account_id", "string"),
    Column("request_id", "string"),
    Column("shared_event_id", "string"),
    Column("vpc_endpoint_id", "string"),
    Column("table_arn", "string"),
    Column("condition_expression", "string"),
    Column("update_expression", "string"),
    Column("statement", "string"),
    Column("event_version", "string"),
    Column("request_parameters", "string"),
)

# Partition columns live in the object key (`table_name=<t>/dt=<YYYY-MM-DD>/`), never in a line.
PARTITION_COLUMNS: tuple[Column, ...] = (
    Column("table_name", "string"),
    Column("dt", "string"),
)

# The compacted tier's partitions: a table's files by month (`table_name=<t>/month=<YYYY-MM>/`); each file holds `dt`
# as a column, because a closed month's file holds all its days.
COMPACTED_PARTITION_COLUMNS: tuple[Column, ...] = (
    Column("table_name", "string"),
    Column("month", "string"),
)

COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in AUDIT_COLUMNS)

# The raw trail as a table: AWS's documented CloudTrail table (Athena's names, lower case, Hive types), over the trail
# bucket's `AWSLogs/<account>/CloudTrail/<region>/<yyyy>/<MM>/<dd>/` files, one row per event. Nested objects that
# the table types as `string` hold their JSON text.
_SESSION_ISSUER = "struct<type:string,principalid:string,arn:string,accountid:string,username:string>"
_SESSION_CONTEXT = (
    f"struct<attributes:struct<mfaauthenticated:string,creationdate:string>,sessionissuer:{_SESSION_ISSUER}>"
)
TRAIL_COLUMNS: tuple[Column, ...] = (
    Column("eventversion", "string"),
    Column(
        "useridentity",
        "struct<type:string,principalid:string,arn:string,accountid:string,invokedby:string,accesskeyid:string,"
        f"username:string,sessioncontext:{_SESSION_CONTEXT}>",
    ),
    Column("eventtime", "string"),
    Column("eventsource", "string"),
    Column("eventname", "string"),
    Column("awsregion", "string"),
    Column("sourceipaddress", "string"),
    Column("useragent", "string"),
    Column("errorcode", "string"),
    Column("errormessage", "string"),
    Column("requestparameters", "string"),
    Column("responseelements", "string"),
    Column("additionaleventdata", "string"),
    Column("requestid", "string"),
    Column("eventid", "string"),
    Column("readonly", "string"),
    Column("resources", "array<struct<arn:string,accountid:string,type:string>>"),
    Column("eventtype", "string"),
    Column("apiversion", "string"),
    Column("recipientaccountid", "string"),
    Column("serviceeventdetails", "string"),
    Column("sharedeventid", "string"),
    Column("vpcendpointid", "string"),
    Column("eventcategory", "string"),
    Column("tlsdetails", "struct<tlsversion:string,ciphersuite:string,clientprovidedhostheader:string>"),
)
# The trail's partitions, projected from the key: the region folder, and the delivery day as `yyyy/MM/dd`.
TRAIL_PARTITION_COLUMNS: tuple[Column, ...] = (
    Column("region", "string"),
    Column("date", "string"),
)
