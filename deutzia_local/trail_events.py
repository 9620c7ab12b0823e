"""Builds the CloudTrail data event that AWS would log for one DynamoDB call, from the call's request and response.

Logs what CloudTrail logs and nothing more: key values as plain scalars, a Put's attribute *names*, expressions
and attribute names, never attribute values; PartiQL with every non-key literal redacted. Pure: the caller looks
up identities and key schemas and passes them in.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from chalicelib.cloudtrail import DATA_OPERATIONS
from chalicelib.partiql import read_statement_target, redact_statement
from chalicelib.selectors import READ_OPERATIONS

EVENT_VERSION = "1.09"
API_VERSION = "2012-08-10"

# Request fields CloudTrail keeps: names and expressions, never values (ExpressionAttributeValues, Item values).
_LOGGED_FIELDS = (
    "IndexName",
    "KeyConditionExpression",
    "FilterExpression",
    "ProjectionExpression",
    "UpdateExpression",
    "ConditionExpression",
    "ExpressionAttributeNames",
    "Select",
    "Limit",
    "ScanIndexForward",
    "ConsistentRead",
    "Segment",
    "TotalSegments",
    "ReturnValues",
    "ReturnConsumedCapacity",
    "ReturnItemCollectionMetrics",
    "ReturnValuesOnConditionCheckFailure",
)

KeySchemaLookup = Callable[[str], "frozenset[str] | None"]


@dataclass(frozen=True)
class DynamoDBCall:
    """One HTTP attempt at a DynamoDB data-plane operation, as the endpoint saw it."""

    operation: str
    request: Mapping[str, Any]
    region: str
    account_id: str
    user_identity: Mapping[str, Any]
    source_ip: str
    user_agent: str
    request_id: str
    error_code: str | None = None
    error_message: str | None = None
    event_time: datetime | None = None


def build_cloudtrail_event(call: DynamoDBCall, key_attributes: KeySchemaLookup) -> dict[str, Any]:
    """The CloudTrail data event of the shape AWS logs for `call`."""
    parameters, tables = _request_parameters(call, key_attributes)
    event_time = call.event_time or datetime.now(UTC)
    event: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": dict(call.user_identity),
        "eventTime": event_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "dynamodb.amazonaws.com",
        "eventName": call.operation,
        "awsRegion": call.region,
        "sourceIPAddress": call.source_ip,
        "userAgent": call.user_agent,
    }
    if call.error_code is not None:
        event["errorCode"] = call.error_code
        event["errorMessage"] = call.error_message or ""
    event.update(
        {
            "requestParameters": parameters,
            "responseElements": None,
            "requestID": call.request_id,
            "eventID": str(uuid.uuid4()),
            "readOnly": _is_read_only(call),
            "resources": [
                {"accountId": call.account_id, "type": "AWS::DynamoDB::Table", "ARN": table_arn(call, table)}
                for table in tables
            ],
            "eventType": "AwsApiCall",
            "apiVersion": API_VERSION,
            "managementEvent": False,
            "recipientAccountId": call.account_id,
            "eventCategory": "Data",
        }
    )
    return event


def table_arn(call: DynamoDBCall, table: str) -> str:
    return f"arn:aws:dynamodb:{call.region}:{call.account_id}:table/{table}"


def plain_value(value: Any) -> Any:
    """A typed attribute value as CloudTrail logs a key: a string, a JSON number, or base64 text."""
    if isinstance(value, Mapping) and len(value) == 1:
        ((descriptor, inner),) = value.items()
        if descriptor == "N" and isinstance(inner, str):
            number = Decimal(inner)
            if number == number.to_integral_value():
                return int(number)
            as_float = float(number)
            return as_float if Decimal(repr(as_float)) == number else inner
        if descriptor in ("S", "B"):
            return inner
    return value


def _is_read_only(call: DynamoDBCall) -> bool:
    if call.operation in READ_OPERATIONS:
        return True
    statements = _statements(call)
    return bool(statements) and all(s.lstrip().upper().startswith(("SELECT", "EXISTS")) for s in statements)


def _statements(call: DynamoDBCall) -> list[str]:
    if call.operation == "ExecuteStatement":
        return [str(call.request.get("Statement", ""))]
    listed = call.request.get("Statements" if call.operation == "BatchExecuteStatement" else "TransactStatements")
    if call.operation in ("BatchExecuteStatement", "ExecuteTransaction") and isinstance(listed, list):
        return [str(item.get("Statement", "")) for item in listed if isinstance(item, Mapping)]
    return []


def _request_parameters(call: DynamoDBCall, key_attributes: KeySchemaLookup) -> tuple[dict[str, Any], list[str]]:
    """The logged request parameters, and the tables the call names, in order."""
    request = call.request
    tables: list[str] = []

    def note(table: object) -> str:
        name = str(table)
        if name not in tables:
            tables.append(name)
        return name

    operation = call.operation
    if operation in ("PutItem", "UpdateItem", "DeleteItem", "GetItem", "Query", "Scan"):
        table = note(request.get("TableName", ""))
        parameters: dict[str, Any] = {"tableName": table}
        if operation == "PutItem":
            item = request.get("Item", {})
            key = _key_of(item, key_attributes(table))
            if key is not None:
                parameters["key"] = key
            parameters["item"] = list(item) if isinstance(item, Mapping) else []
        elif operation in ("UpdateItem", "DeleteItem", "GetItem"):
            parameters["key"] = _plain_key(request.get("Key", {}))
        parameters.update(_logged_fields(request))
        return parameters, tables
    if operation in ("BatchWriteItem", "BatchGetItem"):
        items: list[dict[str, Any]] = []
        for table, requests in (request.get("RequestItems") or {}).items():
            note(table)
            if operation == "BatchGetItem":
                for key in requests.get("Keys", []):
                    items.append({"operation": "Get", "tableName": table, "key": _plain_key(key)})
                continue
            for entry in requests:
                if "PutRequest" in entry:
                    item = entry["PutRequest"].get("Item", {})
                    logged = {"operation": "Put", "tableName": table, "key": _key_of(item, key_attributes(table))}
                    items.append({**logged, "items": list(item)})
                elif "DeleteRequest" in entry:
                    key = _plain_key(entry["DeleteRequest"].get("Key", {}))
                    items.append({"operation": "Delete", "tableName": table, "key": key})
        return {"requestItems": items}, tables
    if operation in ("TransactWriteItems", "TransactGetItems"):
        items = []
        for entry in request.get("TransactItems", []):
            for kind, body in entry.items():
                table = note(body.get("TableName", ""))
                logged = {"operation": kind, "tableName": table}
                if kind == "Put":
                    item = body.get("Item", {})
                    logged.update(key=_key_of(item, key_attributes(table)), items=list(item))
                else:
                    logged["key"] = _plain_key(body.get("Key", {}))
                logged.update(_logged_fields(body))
                items.append(logged)
        return {"requestItems": items}, tables
    redacted = []
    for statement in _statements(call):
        target = read_statement_target(statement)
        keys = key_attributes(note(target.table_name)) if target.table_name else None
        redacted.append(redact_statement(statement, keys or frozenset()))
    if operation == "ExecuteStatement":
        return {"statement": redacted[0] if redacted else ""}, tables
    listed = [{"statement": statement} for statement in redacted]
    return ({"transactStatements": listed} if operation == "ExecuteTransaction" else {"requestItems": listed}), tables


def _plain_key(key: Any) -> dict[str, Any]:
    if not isinstance(key, Mapping):
        return {}
    return {str(name): plain_value(value) for name, value in key.items()}


def _key_of(item: Any, key_attributes: frozenset[str] | None) -> dict[str, Any] | None:
    """The key attributes of a whole item (a Put names its item, not its key)."""
    if not isinstance(item, Mapping) or not key_attributes:
        return None
    return {name: plain_value(item[name]) for name in sorted(key_attributes) if name in item}


def _logged_fields(request: Mapping[str, Any]) -> dict[str, Any]:
    return {name[0].lower() + name[1:]: request[name] for name in _LOGGED_FIELDS if name in request}


def error_of(status: int, body: bytes) -> tuple[str | None, str | None]:
    """The error code and message of a DynamoDB JSON response, or (None, None) for a success."""
    if status < 400:
        return None, None
    try:
        document = json.loads(body)
    except ValueError:
        return "InternalServerError", "Internal server error"
    if not isinstance(document, Mapping):
        return "InternalServerError", "Internal server error"
    error_type = str(document.get("__type", "InternalServerError"))
    message = document.get("message", document.get("Message", ""))
    return error_type.rsplit("#", 1)[-1], str(message)


def is_data_operation(target: str | None) -> str | None:
    """The operation named by an `X-Amz-Target` header when it is a DynamoDB data-plane call."""
    if not target or not target.startswith("DynamoDB_"):
        return None
    operation = target.split(".", 1)[-1]
    return operation if operation in DATA_OPERATIONS else None


def tables_of(event: Mapping[str, Any]) -> Sequence[str]:
    """The table ARNs an event names."""
    return [str(resource.get("ARN")) for resource in event.get("resources", [])]
