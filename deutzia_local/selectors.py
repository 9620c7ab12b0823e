"""Decides whether a trail logs an event, from the trail's settings as created in moto (basic or advanced selectors).

Follows CloudTrail: a stopped trail logs nothing; a single-region trail only its own region; a trail without data
selectors no data events; advanced selectors match when every field selector matches (positive operators: any
value; negative operators: no value). Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_Compare = Callable[[str, str], bool]
_POSITIVE: dict[str, _Compare] = {"Equals": str.__eq__, "StartsWith": str.startswith, "EndsWith": str.endswith}
_NEGATIVE: dict[str, _Compare] = {"NotEquals": str.__eq__, "NotStartsWith": str.startswith, "NotEndsWith": str.endswith}


@dataclass(frozen=True)
class TrailSettings:
    """What a trail's selection depends on."""

    name: str
    home_region: str
    is_multi_region: bool
    is_logging: bool
    event_selectors: Sequence[Mapping[str, Any]] = field(default_factory=list)
    advanced_event_selectors: Sequence[Mapping[str, Any]] = field(default_factory=list)


def trail_logs(trail: TrailSettings, event: Mapping[str, Any]) -> bool:
    """True when `trail` would log this DynamoDB data event."""
    if not trail.is_logging:
        return False
    if not trail.is_multi_region and event.get("awsRegion") != trail.home_region:
        return False
    if trail.advanced_event_selectors:
        return any(_advanced_matches(selector, event) for selector in trail.advanced_event_selectors)
    return any(_basic_matches(selector, event) for selector in trail.event_selectors)


def _field_values(name: str, event: Mapping[str, Any]) -> list[str]:
    resources = event.get("resources", [])
    if name == "resources.ARN":
        return [str(resource.get("ARN")) for resource in resources]
    if name == "resources.type":
        return [str(resource.get("type")) for resource in resources]
    if name == "readOnly":
        return ["true" if event.get("readOnly") else "false"]
    return [str(event.get(name, ""))]


def _advanced_matches(selector: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    for field_selector in selector.get("FieldSelectors", []):
        values = _field_values(str(field_selector.get("Field")), event)
        for operator, compare in _POSITIVE.items():
            expected = field_selector.get(operator)
            if expected and not any(compare(value, e) for value in values for e in expected):
                return False
        for operator, compare in _NEGATIVE.items():
            expected = field_selector.get(operator)
            if expected and any(compare(value, e) for value in values for e in expected):
                return False
    return True


def _basic_matches(selector: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    read_write = selector.get("ReadWriteType", "All")
    read_only = bool(event.get("readOnly"))
    if (read_write == "ReadOnly" and not read_only) or (read_write == "WriteOnly" and read_only):
        return False
    arns = _field_values("resources.ARN", event)
    for resource in selector.get("DataResources", []):
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        if any(arn.startswith(value) for value in resource.get("Values", []) for arn in arns):
            return True
    return False
