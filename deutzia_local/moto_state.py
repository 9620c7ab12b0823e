"""Reads the state the recorder needs from moto's in-process backends: who owns an access key, a table's key
attributes, the local trail's selectors. The one module that leans on moto's internals (moto is pinned; the
e2e and unit tests cover each function). Read-only.
"""

from __future__ import annotations

from typing import Any

from moto.cloudtrail.models import cloudtrail_backends
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.iam.models import get_account_id_from, iam_backends
from moto.sts.models import sts_backends

from chalicelib.selectors import TrailSettings


def account_of(access_key_id: str) -> str:
    """The account that owns the key; moto's default account for a key it does not know."""
    return get_account_id_from(access_key_id) or DEFAULT_ACCOUNT_ID


def user_identity(access_key_id: str, account_id: str) -> dict[str, Any]:
    """The CloudTrail `userIdentity` of the caller who signed with `access_key_id`."""
    assumed = sts_backends[account_id]["global"].get_assumed_role_from_access_key(access_key_id)
    if assumed is not None:
        role_name = assumed.role_arn.rsplit("/", 1)[-1]
        role_id = assumed.user_id.split(":", 1)[0]
        return {
            "type": "AssumedRole",
            "principalId": assumed.user_id,
            "arn": assumed.arn,
            "accountId": account_id,
            "accessKeyId": access_key_id,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": role_id,
                    "arn": assumed.role_arn,
                    "accountId": account_id,
                    "userName": role_name,
                },
                "attributes": {"mfaAuthenticated": "false"},
            },
        }
    user = iam_backends[account_id]["aws"].get_user_from_access_key_id(access_key_id)
    if user is not None:
        return {
            "type": "IAMUser",
            "principalId": user.id,
            "arn": user.arn,
            "accountId": account_id,
            "accessKeyId": access_key_id,
            "userName": user.name,
        }
    return {"type": "Unknown", "principalId": access_key_id, "accountId": account_id, "accessKeyId": access_key_id}


def key_attributes(account_id: str, region: str, table_name: str) -> frozenset[str] | None:
    """The table's key attribute names, or None when moto has no such table."""
    table = dynamodb_backends[account_id][region].tables.get(table_name)
    if table is None:
        return None
    names = {table.hash_key_attr}
    if table.range_key_attr:
        names.add(table.range_key_attr)
    return frozenset(names)


def trail_settings(account_id: str, trail_name: str) -> TrailSettings | None:
    """The named trail as moto holds it, from whichever region it was created in."""
    for region, backend in list(cloudtrail_backends[account_id].items()):
        trail = backend.trails.get(trail_name)
        if trail is not None:
            return TrailSettings(
                name=trail_name,
                home_region=region,
                is_multi_region=bool(trail.is_multi_region),
                is_logging=bool(trail.status.is_logging),
                event_selectors=list(trail.event_selectors),
                advanced_event_selectors=list(trail.advanced_event_selectors),
            )
    return None
