"""Turns one CloudTrail event into audit records: one per DynamoDB item the call touched.

Defensive by design: request parameter names match case-insensitively, shapes AWS has not published are read
from the documented fields, and an item that cannot be identified is kept with `item_key` null. Only an event
without its id or time is refused (MalformedEventError). Pure: no I/O, no logging of key values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from chalicelib.bounds import (
    MAX_ARN_CHARS,
    MAX_ITEMS_PER_EVENT,
    MAX_KEY_CHARS,
    MAX_LINE_BYTES,
    MAX_REQUEST_PARAMETERS_CHARS,
    MAX_STATEMENT_CHARS,
    MAX_TEXT_CHARS,
    bounded_names,
    bounded_text,
    parse_event_time,
)
from chalicelib.errors import MalformedEventError
from chalicelib.partiql import read_statement_target
from chalicelib.records import UNKNOWN_PARTITION, AuditRecord, canonical_key, compact_json

DYNAMODB_EVENT_SOURCE = "dynamodb.amazonaws.com"

# The operation an event names for its single item; multi-item calls name theirs per item.
SINGLE_ITEM_OPERATIONS: Mapping[str, str] = {
    "PutItem": "Put",
    "UpdateItem": "Update",
    "DeleteItem": "Delete",
    "GetItem": "Get",
    "Query": "Query",
    "Scan": "Scan",
    "ExecuteStatement": "Statement",
}
MULTI_ITEM_OPERATIONS: Mapping[str, str] = {
    "BatchGetItem": "Get",
    "BatchWriteItem": "Put",
    "TransactWriteItems": "Update",
    "TransactGetItems": "Get",
    "BatchExecuteStatement": "Statement",
    "ExecuteTransaction": "Statement",
}
DATA_OPERATIONS = frozenset(SINGLE_ITEM_OPERATIONS) | frozenset(MULTI_ITEM_OPERATIONS)
_STATEMENT_OPERATIONS = frozenset({"ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction"})
# The lists an item-level request's items arrive in, in the order they are looked for.
_ITEM_LISTS = ("requestItems", "transactItems", "transactStatements", "statements")
# Request shapes of the DynamoDB API itself (`{"PutRequest": {...}}`, `{"Update": {...}}`), read when logged.
_WRAPPED_OPERATIONS: Mapping[str, str] = {
    "putrequest": "Put",
    "deleterequest": "Delete",
    "put": "Put",
    "update": "Update",
    "delete": "Delete",
    "conditioncheck": "ConditionCheck",
    "get": "Get",
}
# CloudTrail's event ids are UUIDs; anything else is refused rather than cut (a cut id could collide with another).
_EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# A table's name, or its ARN (the API takes both): anything else is no table, and its item goes to the unknown one.
_TABLE_NAME = re.compile(r"^(?:arn:aws[A-Za-z-]*:dynamodb:[a-z0-9-]*:[0-9]*:table/)?([A-Za-z0-9_.-]{3,255})$")
_OPERATION_NAMES: Mapping[str, str] = {
    name.lower(): name for name in ("Put", "Update", "Delete", "Get", "ConditionCheck", "Query", "Scan", "Statement")
}


@dataclass(frozen=True)
class _Item:
    """One item of a request: its operation, table, key and the parameters that describe it."""

    operation: str
    table_name: str | None
    key: object
    parameters: Mapping[str, object]


def parse_event_message(message: str) -> object:
    """A log event's message as JSON, with exact decimals (so a key like 1.10 keeps every digit, and a 5,000-digit
    number is read without Python's integer limit). ValueError when it is not JSON; RecursionError when it nests
    deeper than the parser goes."""
    return json.loads(message, parse_float=Decimal, parse_int=Decimal)


def is_dynamodb_data_event(event: object) -> bool:
    """True for an item-level DynamoDB call (the only events that become audit records)."""
    if not isinstance(event, Mapping):
        return False
    event_name = event.get("eventName")
    return (
        event.get("eventSource") == DYNAMODB_EVENT_SOURCE
        and isinstance(event_name, str)
        and event_name in DATA_OPERATIONS
        and event.get("eventCategory", "Data") == "Data"
    )


def stored_lines(event: object) -> list[tuple[tuple[str, str], str]] | None:
    """The stored lines of one parsed event's records, each with its `(table_name, dt)` partition; None when it is not
    a DynamoDB data event (skipped, not failed). MalformedEventError for a data event that cannot be recorded. The
    fast path (ingest) and backfill (reconciliation) both store what this returns."""
    if not is_dynamodb_data_event(event):
        return None
    assert isinstance(event, Mapping)
    lines = [((record.table_name, record.dt), record.to_line()) for record in build_audit_records(event)]
    for _, line in lines:
        if len(line) > MAX_LINE_BYTES // 4 and len(line.encode("utf-8")) > MAX_LINE_BYTES:
            raise MalformedEventError(f"a record of {len(line)} characters, over the {MAX_LINE_BYTES}-byte line bound")
    return lines


def build_audit_records(event: Mapping[str, object]) -> list[AuditRecord]:
    """The audit records of one DynamoDB data event, in request order."""
    event_id = event.get("eventID")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedEventError("eventID is missing")
    if not _EVENT_ID.match(event_id):
        raise MalformedEventError("eventID is not a CloudTrail event id ([A-Za-z0-9_-], at most 128)")
    event_time = _normalise_time(event.get("eventTime"))
    event_name = str(event.get("eventName"))
    parameters = event.get("requestParameters")
    parameters = parameters if isinstance(parameters, Mapping) else {}
    identity = _mapping(event.get("userIdentity"))
    session_issuer = _mapping(_mapping(identity.get("sessionContext")).get("sessionIssuer"))
    table_resources = _table_resources(event.get("resources"))
    error_code = _text(event.get("errorCode"))
    shared = dict(
        event_id=event_id,
        event_time=event_time,
        event_name=event_name,
        read_only=_boolean(event.get("readOnly")),
        success=error_code is None,
        error_code=error_code,
        error_message=_text(event.get("errorMessage")),
        principal_type=_text(identity.get("type")),
        principal_arn=_text(identity.get("arn")),
        principal_id=_text(identity.get("principalId")),
        principal_name=_text(_principal_name(identity)),
        session_issuer_arn=_text(session_issuer.get("arn")),
        access_key_id=_text(identity.get("accessKeyId")),
        account_id=_text(identity.get("accountId")),
        invoked_by=_text(identity.get("invokedBy")),
        source_ip=_text(event.get("sourceIPAddress")),
        user_agent=_text(event.get("userAgent")),
        aws_region=_text(event.get("awsRegion")),
        recipient_account_id=_text(event.get("recipientAccountId")),
        request_id=_text(event.get("requestID")),
        shared_event_id=_text(event.get("sharedEventID")),
        vpc_endpoint_id=_text(event.get("vpcEndpointId")),
        event_version=_text(event.get("eventVersion")),
    )
    records = []
    items = _items(event_name, parameters)
    if len(items) > MAX_ITEMS_PER_EVENT:
        raise MalformedEventError(f"names {len(items)} items; DynamoDB takes at most {MAX_ITEMS_PER_EVENT} per call")
    for index, item in enumerate(items):
        table_name = _table_name(item.table_name) or _only_table(table_resources) or UNKNOWN_PARTITION
        key = item.key if isinstance(item.key, Mapping) and item.key else None
        records.append(
            AuditRecord(
                **shared,  # type: ignore[arg-type]
                table_name=table_name,
                item_index=index,
                operation=item.operation,
                item_key=_item_key(key),
                attribute_names=_attribute_names(item),
                table_arn=table_resources.get(table_name) or _only_arn(table_resources, item.table_name),
                condition_expression=_text(_get(item.parameters, "conditionExpression")),
                update_expression=_text(_get(item.parameters, "updateExpression")),
                statement=_text(_get(item.parameters, "statement"), MAX_STATEMENT_CHARS),
                request_parameters=bounded_text(compact_json(item.parameters), MAX_REQUEST_PARAMETERS_CHARS),
            )
        )
    return records


def _items(event_name: str, parameters: Mapping[str, object]) -> list[_Item]:
    """The items a request touches, in request order, counted across tables."""
    if event_name in SINGLE_ITEM_OPERATIONS:
        return [_item(SINGLE_ITEM_OPERATIONS[event_name], event_name, None, parameters)]
    default_operation = MULTI_ITEM_OPERATIONS[event_name]
    items: list[_Item] = []
    for name in _ITEM_LISTS:
        listed = _get(parameters, name)
        if isinstance(listed, Sequence) and not isinstance(listed, str):
            for entry in listed:
                items.extend(_listed_items(entry, default_operation, event_name, None))
        elif isinstance(listed, Mapping):  # the API's own shape: {table: [requests]} or {table: {"Keys": [...]}}
            for table_name, requests in listed.items():
                keys = _get(requests, "keys")
                entries = keys if isinstance(keys, Sequence) else requests
                if isinstance(entries, Sequence) and not isinstance(entries, str):
                    for entry in entries:
                        wrapped = {"key": entry} if isinstance(keys, Sequence) else entry
                        items.extend(_listed_items(wrapped, default_operation, event_name, str(table_name)))
        if items:
            return items
    return [_Item(default_operation, None, None, parameters)]


def _listed_items(entry: object, default_operation: str, event_name: str, table_name: str | None) -> list[_Item]:
    if not isinstance(entry, Mapping):
        return [_Item(default_operation, table_name, None, {})]
    if len(entry) == 1:
        ((wrapper, inner),) = entry.items()
        operation = _WRAPPED_OPERATIONS.get(str(wrapper).lower())
        if operation is not None and isinstance(inner, Mapping):
            return [_item(operation, event_name, table_name, inner)]
    named = _OPERATION_NAMES.get(str(_get(entry, "operation")).lower(), default_operation)
    return [_item(named, event_name, table_name, entry)]


def _item(operation: str, event_name: str, table_name: str | None, parameters: Mapping[str, object]) -> _Item:
    statement = _get(parameters, "statement")
    if event_name in _STATEMENT_OPERATIONS and isinstance(statement, str):
        target = read_statement_target(statement)
        return _Item("Statement", table_name or target.table_name, target.key, parameters)
    if operation in ("Query", "Scan"):
        return _Item(operation, table_name or _text(_get(parameters, "tableName")), None, parameters)
    key = _get(parameters, "key")
    return _Item(operation, table_name or _text(_get(parameters, "tableName")), key, parameters)


def _item_key(key: Mapping[str, object] | None) -> str | None:
    """The canonical key, or None when there is none or it is longer than any DynamoDB key (it is no key, and a
    cut one would be neither JSON nor findable; the request parameters keep what was logged)."""
    if key is None:
        return None
    text = canonical_key(key)
    return text if len(text) <= MAX_KEY_CHARS else None


def _attribute_names(item: _Item) -> list[str]:
    return bounded_names(_listed_attribute_names(item))


def _listed_attribute_names(item: _Item) -> list[str]:
    if item.operation == "Put":
        names = _get(item.parameters, "item")
        if names is None:
            names = _get(item.parameters, "items")
        if isinstance(names, Mapping):
            return [str(name) for name in names]
        if isinstance(names, Sequence) and not isinstance(names, str):
            return [str(name) for name in names]
    elif item.operation == "Update":
        names = _get(item.parameters, "expressionAttributeNames")
        if isinstance(names, Mapping):
            return list(dict.fromkeys(str(name) for name in names.values()))
    return []


def _get(mapping: object, name: str) -> object:
    """`mapping[name]`, matching the name case-insensitively (AWS's own examples mix `key` and `Key`)."""
    if type(mapping) is not dict and not isinstance(mapping, Mapping):  # parsed JSON is a dict: skip the ABC check
        return None
    if name in mapping:
        return mapping[name]
    folded = name.casefold()
    for candidate, value in mapping.items():
        if isinstance(candidate, str) and candidate.casefold() == folded:
            return value
    return None


def _mapping(value: object) -> Mapping[str, object]:
    return value if type(value) is dict or isinstance(value, Mapping) else {}


def _text(value: object, limit: int = MAX_TEXT_CHARS) -> str | None:
    """A free-text field as stored: bounded, valid Unicode; JSON text for a value that is not a string."""
    if value is None:
        return None
    if type(value) is str and len(value) <= limit:
        return value  # lone surrogates are replaced when the line is written (AuditRecord.to_line)
    return bounded_text(value if isinstance(value, str) else compact_json(value), limit)


def _boolean(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _normalise_time(value: object) -> str:
    if not isinstance(value, str):
        raise MalformedEventError("eventTime is missing")
    parsed = parse_event_time(value)
    if parsed is None:
        raise MalformedEventError("eventTime is not a UTC time YYYY-MM-DDTHH:MM:SSZ from 1970 on")
    return f"{parsed.year:04d}-{parsed:%m-%dT%H:%M:%S}Z"


def _principal_name(identity: Mapping[str, object]) -> str | None:
    """The IAM user name, or the session name of an assumed role."""
    user_name = identity.get("userName")
    if isinstance(user_name, str):
        return user_name
    arn = identity.get("arn")
    if identity.get("type") == "AssumedRole":
        if isinstance(arn, str) and ":assumed-role/" in arn:
            return arn.rsplit("/", 1)[-1]
        principal_id = identity.get("principalId")
        if isinstance(principal_id, str) and ":" in principal_id:
            return principal_id.split(":", 1)[1]
    return None


def _table_resources(resources: object) -> dict[str, str]:
    """Table name to ARN, from the event's `AWS::DynamoDB::Table` resources."""
    tables: dict[str, str] = {}
    if not isinstance(resources, Sequence) or isinstance(resources, str):
        return tables
    for resource in resources:
        arn = _get(resource, "ARN")
        if _get(resource, "type") == "AWS::DynamoDB::Table" and isinstance(arn, str):
            resource_path = arn.split(":", 5)[-1]
            name = _table_name(resource_path.split("/")[1]) if resource_path.startswith("table/") else None
            if name is not None and len(arn) <= MAX_ARN_CHARS:
                tables[name] = arn
    return tables


def _table_name(value: str | None) -> str | None:
    """A valid DynamoDB table name, from a name or a table ARN; None for anything else."""
    match = _TABLE_NAME.match(value) if value else None
    return match.group(1) if match else None


def _only_table(tables: Mapping[str, str]) -> str | None:
    return next(iter(tables)) if len(tables) == 1 else None


def _only_arn(tables: Mapping[str, str], table_name: str | None) -> str | None:
    """The single table resource's ARN, when the item's own table is unknown."""
    return next(iter(tables.values())) if table_name is None and len(tables) == 1 else None
