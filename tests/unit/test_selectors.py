"""Which audited calls a trail's event selectors leave out: an event name, reads, a table, some callers (a selector on
the caller's ARN, or on a console session), basic selectors; each named for people, and a set that logs every call
names nothing. The same evaluation decides what the local stack's recorder logs (tests/unit/test_local_events.py)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from chalicelib.selectors import (
    ANY_TABLE,
    MAX_TABLES_NAMED,
    READ_OPERATIONS,
    STATEMENT_OPERATIONS,
    WRITE_OPERATIONS,
    selector_problems,
    table_arn,
    unlogged_calls,
)

TRAIL = "arn:aws:cloudtrail:eu-west-1:123456789012:trail/deutzia-dynamodb"
ARNS = {name: f"arn:aws:dynamodb:eu-west-1:123456789012:table/{name}" for name in ("Orders", "Users")}
DATA = [
    {"Field": "eventCategory", "Equals": ["Data"]},
    {"Field": "resources.type", "Equals": ["AWS::DynamoDB::Table"]},
]
EVERY_CALL = [{"Name": "every table", "FieldSelectors": DATA}]
WRITES = sorted(WRITE_OPERATIONS | STATEMENT_OPERATIONS)
READS = sorted([*READ_OPERATIONS, *(f"{name} (reads)" for name in STATEMENT_OPERATIONS)])


def _only(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"Name": "narrowed", "FieldSelectors": [*DATA, *extra]}]


def test_selectors_that_log_every_call_leave_nothing_out() -> None:
    assert unlogged_calls([], EVERY_CALL, ARNS, reads=True) == {}
    tables = {"Field": "resources.ARN", "EndsWith": ["/Orders", "/Users"]}
    assert unlogged_calls([], _only(tables), ARNS, reads=True) == {}
    basic = [
        {"ReadWriteType": "All", "DataResources": [{"Type": "AWS::DynamoDB::Table", "Values": ["arn:aws:dynamodb"]}]}
    ]
    assert unlogged_calls(basic, [], ARNS, reads=True) == {}


def test_each_way_of_leaving_calls_out_is_found() -> None:
    no_deletes = _only({"Field": "eventName", "NotEquals": ["DeleteItem", "BatchWriteItem"]})
    assert unlogged_calls([], no_deletes, ARNS, reads=True) == {key: ["BatchWriteItem", "DeleteItem"] for key in ARNS}
    writes_only = _only({"Field": "readOnly", "Equals": ["false"]})
    assert unlogged_calls([], writes_only, ARNS, reads=False) == {}
    assert unlogged_calls([], writes_only, ARNS, reads=True) == dict.fromkeys(ARNS, READS)
    not_users = _only({"Field": "resources.ARN", "NotEndsWith": ["/Users"]})
    assert unlogged_calls([], not_users, ARNS, reads=False) == {"Users": WRITES}
    # Some callers: a selector on the caller's ARN, on console sessions, or on a field the check does not know.
    for narrowed in (
        {"Field": "userIdentity.arn", "NotStartsWith": ["arn:aws:sts::123456789012:assumed-role/ops/"]},
        {"Field": "sessionCredentialFromConsole", "NotEquals": ["true"]},
        {"Field": "somethingCloudTrailAddsLater", "Equals": ["x"]},
    ):
        assert unlogged_calls([], _only(narrowed), ARNS, reads=False) == dict.fromkeys(ARNS, WRITES), narrowed
    everyone_basic = [
        {"ReadWriteType": "All", "DataResources": [{"Type": "AWS::DynamoDB::Table", "Values": ["arn:aws"]}]}
    ]
    arn_only = _only({"Field": "userIdentity.arn", "Equals": ["arn:aws:iam::123456789012:user/ci"]})
    assert unlogged_calls(everyone_basic, arn_only, ARNS, reads=False) == {key: WRITES for key in ARNS}  # advanced rule
    # ... unless another selector logs those calls whoever makes them.
    some_callers = _only({"Field": "userIdentity.arn", "StartsWith": ["arn:aws:iam::123456789012:user/"]})
    assert unlogged_calls([], [*some_callers, *EVERY_CALL], ARNS, reads=True) == {}
    basic_writes = [
        {"ReadWriteType": "WriteOnly", "DataResources": [{"Type": "AWS::DynamoDB::Table", "Values": [ARNS["Orders"]]}]}
    ]
    assert unlogged_calls(basic_writes, [], ARNS, reads=True) == {"Orders": READS, "Users": sorted([*WRITES, *READS])}
    # A basic selector names a table by its ARN, not a prefix of others': Orders is not OrdersArchive.
    archive = {"OrdersArchive": ARNS["Orders"] + "Archive"}
    assert unlogged_calls(basic_writes, [], archive, reads=False) == {"OrdersArchive": WRITES}
    management_only = [{"IncludeManagementEvents": True, "ReadWriteType": "All", "DataResources": []}]
    assert unlogged_calls(management_only, [], ARNS, reads=False) == dict.fromkeys(ARNS, WRITES)
    assert unlogged_calls([], [], ARNS, reads=False) == dict.fromkeys(ARNS, WRITES)  # no data selector at all


@given(st.sets(st.sampled_from(sorted(WRITE_OPERATIONS | READ_OPERATIONS | STATEMENT_OPERATIONS))))
def test_exactly_the_calls_a_selector_filters_out_are_named(names: set[str]) -> None:
    narrowed = _only({"Field": "eventName", "NotEquals": sorted(names)}) if names else EVERY_CALL
    expected = sorted(
        [
            *(name for name in names if name not in READ_OPERATIONS),
            *(name for name in names if name in READ_OPERATIONS),
            *(f"{name} (reads)" for name in names if name in STATEMENT_OPERATIONS),
        ]
    )
    assert unlogged_calls([], narrowed, ARNS, reads=True) == (dict.fromkeys(ARNS, expected) if names else {})
    # And the same calls logged by a selector of their own: nothing left out.
    if names:
        again = _only({"Field": "eventName", "Equals": sorted(names)})
        assert unlogged_calls([], [*narrowed, *again], ARNS, reads=True) == {}


def test_what_is_left_out_is_named_for_people_table_by_table() -> None:
    (problem,) = selector_problems({"Orders": ["BatchWriteItem", "DeleteItem"]})
    assert problem.startswith("the trail's event selectors do not log BatchWriteItem, DeleteItem on Orders for every")
    assert "recorded nowhere, neither in GET /audit nor in the trail's files" in problem
    (anywhere,) = selector_problems({ANY_TABLE: ["PutItem"]}, any_table=True)
    assert "PutItem on every table (AUDITED_TABLES is *)" in anywhere
    many = selector_problems({f"T{n:03d}": ["PutItem"] for n in range(MAX_TABLES_NAMED + 5)})
    assert len(many) == MAX_TABLES_NAMED + 1
    assert many[-1] == "the trail's event selectors leave out calls on 5 more audited tables"
    assert selector_problems({}) == []


def test_a_tables_arn_is_in_the_trails_partition_region_and_account() -> None:
    assert table_arn(TRAIL, "Orders") == "arn:aws:dynamodb:eu-west-1:123456789012:table/Orders"
    china = "arn:aws-cn:cloudtrail:cn-north-1:123456789012:trail/t"
    assert table_arn(china, "Orders") == "arn:aws-cn:dynamodb:cn-north-1:123456789012:table/Orders"
    for not_a_trail in ("deutzia-dynamodb", "arn:aws:s3:::bucket", "arn:aws:cloudtrail:::trail/t", ""):
        assert table_arn(not_a_trail, "Orders") is None
