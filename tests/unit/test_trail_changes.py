"""What CloudTrail's event history tells the trail watch (botocore's Stubber plays LookupEvents): who made the change
behind a problem (the newest successful call of that kind on this trail, other trails and refused attempts aside), and
each time the trail's selectors left audited calls out before being set again; read page by page within a bound and
within LookupEvents' rate; nothing said when the history cannot be read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.stub import ANY, Stubber
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.selectors import READ_OPERATIONS, STATEMENT_OPERATIONS
from chalicelib.trail_changes import (
    MAX_PAGES,
    SECONDS_BETWEEN_CALLS,
    TrailChange,
    calls_on_trail,
    changes,
    current_narrowing,
    last_change,
    logged_selectors,
    logging_history,
    narrowed_windows,
    stopped_times,
    unseen_stops,
    who_changed,
)

TRAIL = "arn:aws:cloudtrail:eu-west-1:123456789012:trail/deutzia-dynamodb"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
MALLORY = "arn:aws:iam::123456789012:user/mallory"


def _event(
    name: str, at: str, trail: str = TRAIL, who: str = MALLORY, parameters: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    record = {
        "eventVersion": "1.09",
        "userIdentity": {"type": "IAMUser", "arn": who, "accountId": "123456789012"},
        "eventTime": at,
        "eventSource": "cloudtrail.amazonaws.com",
        "eventName": name,
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "203.0.113.7",
        "requestParameters": {"trailName" if name == "PutEventSelectors" else "name": trail, **(parameters or {})},
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


# Selectors as a PutEventSelectors event logs them (CloudTrail writes request parameters in lower camel case).
_DATA = [
    {"field": "eventCategory", "equals": ["Data"]},
    {"field": "resources.type", "equals": ["AWS::DynamoDB::Table"]},
]
EVERY_CALL = {"advancedEventSelectors": [{"name": "every call", "fieldSelectors": _DATA}]}
NO_BOOKS_DELETES = {
    "advancedEventSelectors": [
        {"name": "not Books", "fieldSelectors": [*_DATA, {"field": "resources.ARN", "notEndsWith": ["/Books"]}]},
        {
            "name": "Books but deletes",
            "fieldSelectors": [
                *_DATA,
                {"field": "resources.ARN", "endsWith": ["/Books"]},
                {"field": "eventName", "notEquals": ["DeleteItem"]},
            ],
        },
    ]
}
ARNS = {name: f"arn:aws:dynamodb:eu-west-1:123456789012:table/{name}" for name in ("Books", "Music")}


def test_selectors_are_read_from_their_event_in_either_case() -> None:
    logged = logged_selectors({"trailName": TRAIL, **NO_BOOKS_DELETES})
    assert logged is not None
    basic, advanced = logged
    assert basic == []
    assert advanced[1]["FieldSelectors"][3] == {"Field": "eventName", "NotEquals": ["DeleteItem"]}
    as_api = {"TrailName": TRAIL, "AdvancedEventSelectors": [{"Name": "x", "FieldSelectors": []}]}
    assert logged_selectors(as_api) == ([], [{"Name": "x", "FieldSelectors": []}])
    basic_only = {
        "eventSelectors": [
            {
                "readWriteType": "All",
                "dataResources": [{"type": "AWS::DynamoDB::Table", "values": ["arn:aws:dynamodb"]}],
            }
        ]
    }
    assert logged_selectors(basic_only) == (
        [{"ReadWriteType": "All", "DataResources": [{"Type": "AWS::DynamoDB::Table", "Values": ["arn:aws:dynamodb"]}]}],
        [],
    )
    assert logged_selectors({"trailName": TRAIL}) is None


def test_selectors_that_left_calls_out_until_set_again_are_named_with_who_and_when() -> None:
    events = [
        _event("PutEventSelectors", "2026-11-29T09:04:00Z", parameters=EVERY_CALL, who="arn:aws:iam::1:role/deploy"),
        _event("PutEventSelectors", "2026-11-29T09:01:00Z", parameters=NO_BOOKS_DELETES),
        _event("PutEventSelectors", "2026-11-29T09:00:00Z", parameters=EVERY_CALL, who="arn:aws:iam::1:role/deploy"),
        _event("PutEventSelectors", "2026-11-29T09:02:00Z", parameters={"odd": 1}),  # unreadable: passed over
        _event("PutEventSelectors", "2026-11-29T09:03:00Z", parameters=NO_BOOKS_DELETES, errorCode="AccessDenied"),
    ]
    history = changes(events, "PutEventSelectors", TRAIL)
    assert [change.at[-9:] for change in history] == ["09:00:00Z", "09:01:00Z", "09:02:00Z", "09:04:00Z"]
    assert narrowed_windows(history, ARNS, reads=False) == [
        f"from 2026-11-29T09:01:00Z to 2026-11-29T09:02:00Z the trail's event selectors, set by {MALLORY}, did not "
        "log DeleteItem on Books for every caller: calls in between were recorded nowhere, and no backfill can find "
        "them"
    ]
    # Selectors that leave calls out now: named by the check itself, not as a past window; and a window that ended
    # before `since` is no longer named.
    assert narrowed_windows(history[:2], ARNS, reads=False) == []
    assert narrowed_windows(history, ARNS, reads=False, since="2026-11-29T09:02:01Z") == []
    writes_only = {"advancedEventSelectors": [{"fieldSelectors": [*_DATA, {"field": "readOnly", "equals": ["false"]}]}]}
    then_back = changes(
        [events[2], _event("PutEventSelectors", "2026-11-29T09:03:00Z", parameters=writes_only), events[0]],
        "PutEventSelectors",
        TRAIL,
    )
    reads = sorted([*READ_OPERATIONS, *(f"{name} (reads)" for name in STATEMENT_OPERATIONS)])
    (window,) = narrowed_windows(then_back, ARNS, reads=True, any_table=True)
    assert window.startswith("from 2026-11-29T09:03:00Z to 2026-11-29T09:04:00Z the trail's event selectors, set by ")
    assert f"did not log {', '.join(reads)} on every table; " in window
    assert narrowed_windows(then_back, ARNS, reads=False) == []  # reads are not audited: nothing was left out


def test_a_table_added_to_the_stack_is_no_window_though_the_selectors_before_left_it_out() -> None:
    only_music = {
        "advancedEventSelectors": [{"fieldSelectors": [*_DATA, {"field": "resources.ARN", "endsWith": ["/Music"]}]}]
    }
    both = {
        "advancedEventSelectors": [
            {"fieldSelectors": [*_DATA, {"field": "resources.ARN", "endsWith": ["/Music", "/Books"]}]}
        ]
    }
    deploy = "arn:aws:iam::123456789012:role/cloudformation"
    events = [
        _event("PutEventSelectors", "2026-11-20T00:00:00Z", parameters=only_music, who=deploy),
        _event("PutEventSelectors", "2026-11-29T08:00:00Z", parameters=only_music, who=deploy),
        _event("PutEventSelectors", "2026-11-29T09:00:00Z", parameters=both, who=deploy),
    ]
    assert narrowed_windows(changes(events, "PutEventSelectors", TRAIL), ARNS, reads=True) == []


def test_the_selectors_history_is_read_page_by_page_since_two_days_ago() -> None:
    client, stubber = _client()
    page = [_event("PutEventSelectors", "2026-11-29T09:01:00Z", parameters=NO_BOOKS_DELETES)]
    stubber.add_response("lookup_events", {"Events": page, "NextToken": "p2"}, _asked("PutEventSelectors"))
    older = [_event("PutEventSelectors", "2026-11-29T09:00:00Z", parameters=EVERY_CALL)]
    stubber.add_response("lookup_events", {"Events": older}, _asked("PutEventSelectors", "p2"))
    waits: list[float] = []
    with stubber:
        history = calls_on_trail(client, "PutEventSelectors", TRAIL, NOW, waits.append)
    assert history is not None
    assert [change.at for change in history] == ["2026-11-29T09:00:00Z", "2026-11-29T09:01:00Z"]
    assert waits == [SECONDS_BETWEEN_CALLS]
    stubber.add_client_error("lookup_events", service_error_code="ThrottlingException")
    with stubber:
        assert calls_on_trail(client, "PutEventSelectors", TRAIL, NOW, lambda _: None) is None  # unknown, not none


def test_the_selectors_now_are_a_narrowing_from_when_they_were_set_until_now() -> None:
    set_now = changes(
        [_event("PutEventSelectors", "2026-11-29T09:01:00Z", parameters=NO_BOOKS_DELETES)], "PutEventSelectors", TRAIL
    )
    narrowing = current_narrowing(set_now, ARNS, reads=True, now="2026-11-29T12:00:00Z")
    assert narrowing is not None
    assert (narrowing.start, narrowing.end, narrowing.who) == ("2026-11-29T09:01:00Z", "2026-11-29T12:00:00Z", MALLORY)
    assert narrowing.note() == "its selectors left out DeleteItem on Books"
    every = changes(
        [_event("PutEventSelectors", "2026-11-29T09:00:00Z", parameters=EVERY_CALL)], "PutEventSelectors", TRAIL
    )
    assert current_narrowing(every, ARNS, reads=True, now="2026-11-29T12:00:00Z") is None
    assert current_narrowing([], ARNS, reads=True, now="2026-11-29T12:00:00Z") is None  # since when: unknown
    no_books = {
        "advancedEventSelectors": [{"fieldSelectors": [*_DATA, {"field": "resources.ARN", "notEndsWith": ["/Books"]}]}]
    }
    whole = current_narrowing(
        changes([_event("PutEventSelectors", "2026-11-29T09:00:00Z", parameters=no_books)], "PutEventSelectors", TRAIL),
        ARNS,
        reads=True,
        now="2026-11-29T12:00:00Z",
    )
    assert whole is not None
    assert whole.note() == "its selectors left out every call on Books"
    assert whole.note(any_table=True) == "its selectors left out every call on every table"


def _change(name: str, at: str, who: str = MALLORY) -> TrailChange:
    return TrailChange(name, at, who, "203.0.113.7", {"name": TRAIL})


def test_each_stop_lasts_until_the_next_start_and_one_still_going_until_now() -> None:
    stops = [
        _change("StopLogging", at) for at in ("2026-11-29T08:00:00Z", "2026-11-29T08:01:00Z", "2026-11-29T09:30:00Z")
    ]
    starts = [_change("StartLogging", at) for at in ("2026-11-29T07:00:00Z", "2026-11-29T08:02:00Z")]
    stopped = stopped_times(stops, starts, "2026-11-29T12:00:00Z")
    assert stopped == [
        ("2026-11-29T08:00:00Z", "2026-11-29T08:02:00Z", stops[0]),  # a second stop while stopped adds no time
        ("2026-11-29T09:30:00Z", "2026-11-29T12:00:00Z", stops[2]),  # not started again since
    ]
    # The watch names those the trail's status does not tell (it tells the latest), that ended two days ago or since.
    status = [(datetime(2026, 11, 29, 9, 30, 1, tzinfo=UTC), datetime(2026, 11, 29, 12, 0, tzinfo=UTC))]
    assert unseen_stops(stopped, status, "2026-11-27T12:00:00Z") == [
        f"from 2026-11-29T08:00:00Z to 2026-11-29T08:02:00Z the trail was stopped (StopLogging by {MALLORY}): calls "
        "in between were recorded nowhere, and no backfill can find them"
    ]
    assert unseen_stops(stopped, status, "2026-11-29T08:03:00Z") == []
    assert stopped_times([], starts, "2026-11-29T12:00:00Z") == []


def test_the_stops_and_starts_are_read_from_the_history_and_nothing_when_it_cannot_be() -> None:
    client, stubber = _client()
    stubber.add_response(
        "lookup_events", {"Events": [_event("StopLogging", "2026-11-29T08:00:00Z")]}, _asked("StopLogging")
    )
    deleted = [_event("DeleteTrail", "2026-11-29T07:00:00Z")]  # deleted, then made again under its name
    stubber.add_response("lookup_events", {"Events": deleted}, _asked("DeleteTrail"))

    started = [_event("StartLogging", "2026-11-29T08:03:00Z"), _event("StartLogging", "2026-11-29T08:04:00Z", "other")]
    stubber.add_response("lookup_events", {"Events": started}, _asked("StartLogging"))
    waits: list[float] = []
    with stubber:
        history = logging_history(client, TRAIL, NOW, waits.append)
    assert history is not None
    stops, starts = history
    stopped = ["2026-11-29T07:00:00Z", "2026-11-29T08:00:00Z"]
    assert ([c.at for c in stops], [c.at for c in starts]) == (stopped, ["2026-11-29T08:03:00Z"])
    assert waits == [SECONDS_BETWEEN_CALLS] * 2
    stubber.add_client_error("lookup_events", service_error_code="ThrottlingException")
    with stubber:
        assert logging_history(client, TRAIL, NOW, lambda _: None) is None
