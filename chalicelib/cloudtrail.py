"""Turns one CloudTrail event into audit records: one per DynamoDB item the call touched.

Defensive by design: request parameter names match case-insensitively, shapes AWS has not published are read
from the documented fields, and an item that cannot be identified is kept with `item_key` null. Only an event
without its id or time is refused (MalformedEventError). Ingest runs it on every call, so it reads each message
with orjson and builds each line in one pass; a float (a number orjson could not keep as written) sends the message
to the exact parser. Pure: no I/O, no logging of key values.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import NamedTuple, TypeGuard

import orjson

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
from chalicelib.errors import InexactNumberError, MalformedEventError
from chalicelib.partiql import read_statement_target
from chalicelib.records import UNKNOWN_PARTITION, AuditRecord, canonical_key, compact_json, record_line

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
# The request parameters and resource fields as CloudTrail spells them, every name `_get` looks for among them, no
# two the same but for case: a mapping with only these names holds no other spelling of a name it lacks.
_DOCUMENTED_NAMES = frozenset(
    {
        "ARN",
        "accountId",
        "conditionExpression",
        "consistentRead",
        "exclusiveStartKey",
        "expressionAttributeNames",
        "filterExpression",
        "indexName",
        "item",
        "items",
        "key",
        "keyConditionExpression",
        "keys",
        "limit",
        "operation",
        "projectionExpression",
        "requestItems",
        "returnConsumedCapacity",
        "returnItemCollectionMetrics",
        "returnValues",
        "returnValuesOnConditionCheckFailure",
        "scanIndexForward",
        "select",
        "statement",
        "statements",
        "tableName",
        "transactItems",
        "transactStatements",
        "type",
        "updateExpression",
    }
)
# A batch's calls share a few seconds and name a few tables: each distinct time, table name and ARN is read once.
_REMEMBERED = 4096
_MAX_TIME_CHARS = 40  # `2026-11-28T09:36:58.123456789+00:00` and shorter: longer is no time, and is not remembered
_STRINGS = frozenset({str})
_OPERATION_NAMES: Mapping[str, str] = {
    name.lower(): name for name in ("Put", "Update", "Delete", "Get", "ConditionCheck", "Query", "Scan", "Statement")
}


class _Item(NamedTuple):
    """One item of a request: its operation, table, key and the parameters that describe it."""

    operation: str
    table_name: str | None
    key: object
    parameters: Mapping[str, object]


def parse_event_message(message: str) -> object:
    """A log event's message as JSON, with exact decimals (so a key like 1.10 keeps every digit, and a 5,000-digit
    number is read without Python's integer limit; NaN and Infinity too, never floats). ValueError when it is not
    JSON; RecursionError when it nests deeper than the parser goes."""
    return json.loads(message, parse_float=Decimal, parse_int=Decimal, parse_constant=Decimal)


def message_stored_lines(message: str) -> list[tuple[tuple[str, str], str]] | None:
    """`stored_lines` of one log event's message, exactly as after `parse_event_message`, but three times faster:
    orjson reads it, and the exact parser reads it again when orjson refuses it or made a float of a number a
    record would keep. None when it is not JSON; MalformedEventError as stored_lines, or when it nests too deeply."""
    try:
        return stored_lines(orjson.loads(message))
    except (orjson.JSONDecodeError, InexactNumberError):  # lone surrogates, NaN, depth; or a float
        pass
    except RecursionError:  # read by orjson (1,024 levels), but too deep for json to write its parameters back
        raise MalformedEventError("message is JSON nested too deeply") from None
    try:
        event = parse_event_message(message)
    except RecursionError:
        raise MalformedEventError("message is JSON nested too deeply") from None
    except ValueError:
        return None
    return stored_lines(event)


def is_dynamodb_data_event(event: object) -> TypeGuard[Mapping[str, object]]:
    """True for an item-level DynamoDB call (the only events that become audit records)."""
    if not _is_mapping(event):
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
    a DynamoDB data event (skipped, not failed). MalformedEventError for a data event that cannot be recorded, and
    InexactNumberError for a float where a record would keep it (numbers are Decimal or int, as parse_event_message
    reads them). Ingest and backfill (reconciliation) both store what this returns."""
    if not is_dynamodb_data_event(event):
        return None
    lines = []
    for table_name, values in _record_columns(event):
        line = record_line(values)
        if len(line) > MAX_LINE_BYTES // 4 and len(line.encode("utf-8")) > MAX_LINE_BYTES:
            raise MalformedEventError(f"a record of {len(line)} characters, over the {MAX_LINE_BYTES}-byte line bound")
        lines.append(((table_name, str(values["event_time"])[:10]), line))
    return lines


def build_audit_records(event: Mapping[str, object]) -> list[AuditRecord]:
    """The audit records of one DynamoDB data event, in request order."""
    return [AuditRecord(table_name=table_name, **values) for table_name, values in _record_columns(event)]  # type: ignore[arg-type]


def _record_columns(event: Mapping[str, object]) -> list[tuple[str, dict[str, object]]]:
    """Each record's table and its line's values, in the columns' order. One pass over the event; written for speed
    (ingest runs it for every call), with the general, slower reading only for values out of the common shape."""
    event_id = event.get("eventID")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedEventError("eventID is missing")
    if not _EVENT_ID.match(event_id):
        raise MalformedEventError("eventID is not a CloudTrail event id ([A-Za-z0-9_-], at most 128)")
    event_time = _normalise_time(event.get("eventTime"))
    event_name = str(event.get("eventName"))
    parameters = event.get("requestParameters")
    parameters = parameters if _is_mapping(parameters) else {}
    identity = _mapping(event.get("userIdentity"))
    session_issuer = _mapping(_mapping(identity.get("sessionContext")).get("sessionIssuer"))
    table_resources = _table_resources(event.get("resources"))
    texts: tuple[object, ...] = (
        event.get("errorCode"),
        event.get("errorMessage"),
        identity.get("type"),
        identity.get("arn"),
        identity.get("principalId"),
        _principal_name(identity),
        session_issuer.get("arn"),
        identity.get("accessKeyId"),
        identity.get("accountId"),
        identity.get("invokedBy"),
        event.get("sourceIPAddress"),
        event.get("userAgent"),
        event.get("awsRegion"),
        event.get("recipientAccountId"),
        event.get("requestID"),
        event.get("sharedEventID"),
        event.get("vpcEndpointId"),
        event.get("eventVersion"),
    )
    if not _are_short_texts(texts):
        texts = tuple(_text(value) for value in texts)
    (
        error_code,
        error_message,
        principal_type,
        principal_arn,
        principal_id,
        principal_name,
        session_issuer_arn,
        access_key_id,
        account_id,
        invoked_by,
        source_ip,
        user_agent,
        aws_region,
        recipient_account_id,
        request_id,
        shared_event_id,
        vpc_endpoint_id,
        event_version,
    ) = texts
    read_only = event.get("readOnly")
    read_only = read_only if type(read_only) is bool else _boolean(read_only)
    items = _items(event_name, parameters)
    if len(items) > MAX_ITEMS_PER_EVENT:
        raise MalformedEventError(f"names {len(items)} items; DynamoDB takes at most {MAX_ITEMS_PER_EVENT} per call")
    only_table = _only_table(table_resources)
    records = []
    for index, item in enumerate(items):
        table_name = _table_name(item.table_name) or only_table or UNKNOWN_PARTITION
        item_parameters = item.parameters
        # First, as it refuses a float (orjson's reading): the key and attribute names are among these parameters.
        # Keys sorted: the trail's files and its log group may write them in another order, and copies of one record
        # must read the same (compaction and reconciliation compare them).
        parameters_text = _exact_json(item_parameters, sort_keys=True)
        if len(parameters_text) > MAX_REQUEST_PARAMETERS_CHARS:
            parameters_text = bounded_text(parameters_text, MAX_REQUEST_PARAMETERS_CHARS)
        if type(item_parameters) is dict and item_parameters.keys() <= _DOCUMENTED_NAMES:
            get = item_parameters.get  # every name as documented: no other spelling to look for
            condition, update, statement = get("conditionExpression"), get("updateExpression"), get("statement")
        else:
            condition = _get(item_parameters, "conditionExpression")
            update = _get(item_parameters, "updateExpression")
            statement = _get(item_parameters, "statement")
        records.append(
            (
                table_name,
                {
                    "event_id": event_id,
                    "item_index": index,
                    "event_time": event_time,
                    "event_name": event_name,
                    "operation": item.operation,
                    "item_key": _item_key(item.key),
                    "attribute_names": _attribute_names(item),
                    "read_only": read_only,
                    "success": error_code is None,
                    "error_code": error_code,
                    "error_message": error_message,
                    "principal_type": principal_type,
                    "principal_arn": principal_arn,
                    "principal_id": principal_id,
                    "principal_name": principal_name,
                    "session_issuer_arn": session_issuer_arn,
                    "access_key_id": access_key_id,
                    "account_id": account_id,
                    "invoked_by": invoked_by,
                    "source_ip": source_ip,
                    "user_agent": user_agent,
                    "aws_region": aws_region,
                    "recipient_account_id": recipient_account_id,
                    "request_id": request_id,
                    "shared_event_id": shared_event_id,
                    "vpc_endpoint_id": vpc_endpoint_id,
                    "table_arn": table_resources.get(table_name) or _only_arn(table_resources, item.table_name),
                    "condition_expression": _text(condition),
                    "update_expression": _text(update),
                    "statement": _text(statement, MAX_STATEMENT_CHARS),
                    "event_version": event_version,
                    "request_parameters": parameters_text,
                },
            )
        )
    return records


def _are_short_texts(values: tuple[object, ...]) -> bool:
    """True when every value is None or a string within MAX_TEXT_CHARS: stored as it is (lone surrogates are
    replaced when the line is written)."""
    for value in values:  # a plain loop: half the time of set(map(type, values)) here
        if type(value) is str:
            if len(value) > MAX_TEXT_CHARS:
                return False
        elif value is not None:
            return False
    return True


def _items(event_name: str, parameters: Mapping[str, object]) -> list[_Item]:
    """The items a request touches, in request order, counted across tables."""
    if event_name in SINGLE_ITEM_OPERATIONS:
        return [_item(SINGLE_ITEM_OPERATIONS[event_name], event_name, None, parameters)]
    default_operation = MULTI_ITEM_OPERATIONS[event_name]
    items: list[_Item] = []
    for name in _ITEM_LISTS:
        listed = _get(parameters, name)
        if _is_list(listed):
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
    if not _is_mapping(entry):
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


def _item_key(key: object) -> str | None:
    """The canonical key, or None when there is none or it is longer than any DynamoDB key (it is no key, and a
    cut one would be neither JSON nor findable; the request parameters keep what was logged)."""
    if not key or not _is_mapping(key):
        return None
    text = canonical_key(key)
    return text if len(text) <= MAX_KEY_CHARS else None


def _attribute_names(item: _Item) -> list[str]:
    if item.operation == "Put":
        names = _get(item.parameters, "item")
        if names is None:
            names = _get(item.parameters, "items")
        if type(names) is list and _STRINGS.issuperset(map(type, names)):
            return bounded_names(names)
        if _is_mapping(names) or _is_list(names):
            return bounded_names([_name_text(name) for name in names])
    elif item.operation == "Update":
        names = _get(item.parameters, "expressionAttributeNames")
        if _is_mapping(names):
            return bounded_names(list(dict.fromkeys(_name_text(name) for name in names.values())))
    return []


def _name_text(name: object) -> str:
    """A logged name that is not text (a number, a list), as compact JSON: the same whichever parser read it."""
    return name if type(name) is str else compact_json(name)


def _get(mapping: object, name: str) -> object:
    """`mapping[name]`, matching the name case-insensitively (AWS's own examples mix `key` and `Key`)."""
    if type(mapping) is dict:
        if name in mapping:
            return mapping[name]
        if mapping.keys() <= _DOCUMENTED_NAMES:  # every name spelled as documented: no other spelling to look for
            return None
    elif not isinstance(mapping, Mapping):
        return None
    elif name in mapping:
        return mapping[name]
    folded = name.casefold()
    for candidate, value in mapping.items():
        if isinstance(candidate, str) and candidate.casefold() == folded:
            return value
    return None


def _mapping(value: object) -> Mapping[str, object]:
    return value if value is not None and _is_mapping(value) else {}


def _is_mapping(value: object) -> TypeGuard[Mapping[str, object]]:
    """isinstance(value, Mapping), without the ABC's cost for what parsed JSON holds (dicts)."""
    return type(value) is dict or isinstance(value, Mapping)


def _is_list(value: object) -> TypeGuard[Sequence[object]]:
    """A sequence that is not text, without the ABC's cost for what parsed JSON holds (lists)."""
    return type(value) is list or (isinstance(value, Sequence) and not isinstance(value, str))


def _text(value: object, limit: int = MAX_TEXT_CHARS) -> str | None:
    """A free-text field as stored: bounded, valid Unicode; JSON text for a value that is not a string."""
    if value is None:
        return None
    if type(value) is str and len(value) <= limit:
        return value  # lone surrogates are replaced when the line is written (AuditRecord.to_line)
    return bounded_text(value if isinstance(value, str) else _exact_json(value), limit)


def _exact_json(value: object, sort_keys: bool = False) -> str:
    """compact_json of a value that holds no float (a number orjson could not keep exact)."""
    if _holds_float(value):
        raise InexactNumberError("a float where a record keeps the number as written")
    return compact_json(value, sort_keys)


def _holds_float(value: object) -> bool:
    if type(value) is float:
        return True
    pending = [value]
    while pending:
        container = pending.pop()
        kind = type(container)
        if kind is not dict and kind is not list:
            continue
        for inner in container.values() if kind is dict else container:  # type: ignore[union-attr, attr-defined]
            inner_kind = type(inner)
            if inner_kind is str:
                continue
            if inner_kind is dict or inner_kind is list:
                pending.append(inner)
            elif inner_kind is float:
                return True
    return False


def _boolean(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _normalise_time(value: object) -> str:
    if not isinstance(value, str):
        raise MalformedEventError("eventTime is missing")
    normalised = _normalised_time(value) if len(value) <= _MAX_TIME_CHARS else None
    if normalised is None:
        raise MalformedEventError("eventTime is not a UTC time YYYY-MM-DDTHH:MM:SSZ from 1970 on")
    return normalised


@functools.lru_cache(maxsize=_REMEMBERED)
def _normalised_time(value: str) -> str | None:
    parsed = parse_event_time(value)
    return None if parsed is None else f"{parsed.year:04d}-{parsed:%m-%dT%H:%M:%S}Z"


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
    if not _is_list(resources):
        return tables
    for resource in resources:
        arn = _get(resource, "ARN")
        if type(arn) is str and len(arn) <= MAX_ARN_CHARS and _get(resource, "type") == "AWS::DynamoDB::Table":
            name = _table_of_arn(arn)
            if name is not None:
                tables[name] = arn
    return tables


@functools.lru_cache(maxsize=_REMEMBERED)
def _table_of_arn(arn: str) -> str | None:
    """The table a table ARN (of at most MAX_ARN_CHARS, so the memo stays small) names; None when it names none."""
    resource_path = arn.split(":", 5)[-1]
    return _table_name(resource_path.split("/")[1]) if resource_path.startswith("table/") else None


def _table_name(value: str | None) -> str | None:
    """A valid DynamoDB table name, from a name or a table ARN; None for anything else."""
    return _valid_table_name(value) if value and len(value) <= MAX_ARN_CHARS else None


@functools.lru_cache(maxsize=_REMEMBERED)
def _valid_table_name(value: str) -> str | None:
    match = _TABLE_NAME.match(value)
    return match.group(1) if match else None


def _only_table(tables: Mapping[str, str]) -> str | None:
    return next(iter(tables)) if len(tables) == 1 else None


def _only_arn(tables: Mapping[str, str], table_name: str | None) -> str | None:
    """The single table resource's ARN, when the item's own table is unknown."""
    return next(iter(tables.values())) if table_name is None and len(tables) == 1 else None
