"""Who made the change behind a trail's problem, from CloudTrail's event history (botocore's Stubber plays
LookupEvents): the newest successful call of that kind on this trail, whoever's other trails and refused attempts
aside, read page by page within a bound and within LookupEvents' rate; nothing said when the history cannot be read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.stub import ANY, Stubber
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.trail_changes import MAX_PAGES, SECONDS_BETWEEN_CALLS, last_change, who_changed

TRAIL = "arn:aws:cloudtrail:eu-west-1:123456789012:trail/deutzia-dynamodb"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MALLORY = "arn:aws:iam::123456789012:user/mallory"


def _event(name: str, at: str, trail: str = TRAIL, who: str = MALLORY, **fields: Any) -> dict[str, Any]:
    record = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "arn": who, "accountId": "123456789012"},
        "eventTime": at,
        "eventSource": "cloudtrail.amazonaws.com",
        "eventName": name,
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "203.0.113.7",
        "requestParameters": {"trailName" if name == "PutEventSelectors" else "name": trail},
        "responseElements": None,
        **fields,
    }
    return {"EventName": name, "EventTime": NOW, "CloudTrailEvent": json.dumps(record)}


def test_the_newest_successful_call_on_this_trail_is_named() -> None:
    events = [
        _event("StopLogging", "2026-11-29T10:00:00Z", trail="arn:aws:cloudtrail:eu-west-1:123456789012:trail/other"),
        _event("StopLogging", "2026-11-29T09:00:00Z", errorCode="AccessDenied"),  # tried, refused
        _event("StopLogging", "2026-11-29T08:00:00Z", trail="deutzia-dynamodb", who="arn:aws:iam::123456789012:user/x"),
        _event("StopLogging", "2026-11-29T07:00:00Z"),
        {"EventName": "StopLogging", "CloudTrailEvent": "{not json"},
        {"EventName": "StopLogging"},
    ]
    change = last_change(events, "StopLogging", TRAIL)
    assert change is not None
    assert change.text() == (
        "StopLogging was last called on the trail by arn:aws:iam::123456789012:user/x from 203.0.113.7 at "
        "2026-11-29T08:00:00Z"  # named by its name, not its ARN: the same trail
    )
    assert last_change(events, "UpdateTrail", TRAIL) is None
    assert last_change(events[:2], "StopLogging", TRAIL) is None


@given(st.lists(st.one_of(st.none(), st.text(max_size=30), st.dictionaries(st.text(max_size=8), st.text(max_size=8)))))
def test_events_of_any_shape_never_fail_and_what_is_named_is_bounded(values: list[Any]) -> None:
    shaped = [{"eventName": "StopLogging", "requestParameters": {"name": TRAIL}, "userIdentity": v, "eventTime": v}
              for v in values]  # fmt: skip
    events = [{"CloudTrailEvent": json.dumps(record)} for record in shaped]
    change = last_change(events, "StopLogging", TRAIL)
    assert change is None or len(change.text()) < 1100


def _client() -> tuple[Any, Stubber]:
    client = boto3.client("cloudtrail", region_name="eu-west-1")
    return client, Stubber(client)


def _asked(name: str, token: str | None = None) -> dict[str, Any]:
    asked = {
        "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": name}],
        "StartTime": ANY,
        "EndTime": NOW,
        "MaxResults": 50,
    }
    return {**asked, "NextToken": token} if token else asked


def test_each_kind_of_change_is_looked_up_page_by_page_within_a_bound_and_the_rate() -> None:
    client, stubber = _client()
    stubber.add_response("lookup_events", {"Events": [], "NextToken": "p2"}, _asked("StopLogging"))
    stubber.add_response(
        "lookup_events", {"Events": [_event("StopLogging", "2026-11-29T07:00:00Z")]}, _asked("StopLogging", "p2")
    )
    for page in range(MAX_PAGES):  # a kind with no call on this trail: at most MAX_PAGES pages
        other = [_event("PutEventSelectors", "2026-11-29T06:00:00Z", trail="other")]
        stubber.add_response(
            "lookup_events",
            {"Events": other, "NextToken": f"t{page + 1}"},
            _asked("PutEventSelectors", f"t{page}" if page else None),
        )
    waits: list[float] = []
    with stubber:
        said = who_changed(client, TRAIL, ["StopLogging", "PutEventSelectors", "StopLogging"], NOW, waits.append)
    stubber.assert_no_pending_responses()
    assert said == [f"StopLogging was last called on the trail by {MALLORY} from 203.0.113.7 at 2026-11-29T07:00:00Z"]
    assert waits == [SECONDS_BETWEEN_CALLS] * (2 + MAX_PAGES - 1)  # between calls, never before the first


def test_an_event_history_that_cannot_be_read_says_nothing() -> None:
    client, stubber = _client()
    stubber.add_client_error("lookup_events", service_error_code="AccessDeniedException")
    with stubber:
        assert who_changed(client, TRAIL, ["UpdateTrail", "DeleteTrail"], NOW, lambda _: None) == []
    assert who_changed(client, TRAIL, [], NOW) == []
