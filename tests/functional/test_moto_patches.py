"""The local stack's patches to moto: TransactWriteItems backs up only what it can change, still rolls back
exactly as moto does, and takes DynamoDB's 100 items; a trail's logging times are UTC's whatever the machine's zone."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from moto.dynamodb.models import dynamodb_backends

from deutzia_local import moto_patches

_names = itertools.count()


@pytest.fixture
def table(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str]:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    moto_patches.apply()
    client = boto3.client("dynamodb")
    name = f"patched-{next(_names)}"
    client.create_table(
        TableName=name,
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "N"},
        ],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
    )
    for n in range(50):
        client.put_item(TableName=name, Item={"pk": {"S": f"p{n % 5}"}, "sk": {"N": str(n)}, "v": {"N": "0"}})
    return client, name


def _values(client: Any, name: str) -> dict[tuple[str, str], str]:
    items = client.scan(TableName=name)["Items"]
    return {(item["pk"]["S"], item["sk"]["N"]): item["v"]["N"] for item in items}


def _update(name: str, pk: str, sk: str, value: str) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": name,
            "Key": {"pk": {"S": pk}, "sk": {"N": sk}},
            "UpdateExpression": "SET v = :v",
            "ExpressionAttributeValues": {":v": {"N": value}},
        }
    }


def test_a_failed_transaction_rolls_back_updates_puts_and_deletes(table: tuple[Any, str]) -> None:
    client, name = table
    before = _values(client, name)
    with pytest.raises(client.exceptions.TransactionCanceledException):
        client.transact_write_items(
            TransactItems=[
                _update(name, "p1", "1", "99"),
                {"Put": {"TableName": name, "Item": {"pk": {"S": "new"}, "sk": {"N": "1"}, "v": {"N": "1"}}}},
                {"Delete": {"TableName": name, "Key": {"pk": {"S": "p2"}, "sk": {"N": "2"}}}},
                {
                    "ConditionCheck": {
                        "TableName": name,
                        "Key": {"pk": {"S": "p3"}, "sk": {"N": "3"}},
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                },
            ]
        )
    assert _values(client, name) == before


def test_a_transaction_that_succeeds_applies_every_item(table: tuple[Any, str]) -> None:
    client, name = table
    client.transact_write_items(TransactItems=[_update(name, "p1", "1", "7"), _update(name, "p2", "2", "8")])
    values = _values(client, name)
    assert (values[("p1", "1")], values[("p2", "2")], values[("p3", "3")]) == ("7", "8", "0")


def test_a_transaction_takes_dynamodbs_100_items_and_refuses_101(table: tuple[Any, str]) -> None:
    client, name = table
    items = [_update(name, f"p{n % 5}", str(n), "9") for n in range(50)]
    items += [_update(name, "new", str(n), "9") for n in range(50)]
    client.transact_write_items(TransactItems=items)
    assert set(_values(client, name).values()) == {"9"}
    with pytest.raises(client.exceptions.ClientError, match="less than or equal to 100"):
        client.transact_write_items(TransactItems=[*items, _update(name, "new", "100", "9")])


def test_the_backup_shares_every_item_the_call_does_not_name(table: tuple[Any, str]) -> None:
    _, name = table
    live = dynamodb_backends["123456789012"]["us-east-1"].tables[name]
    keys = {name: [{"pk": {"S": "p1"}, "sk": {"N": "1"}}]}
    backup = moto_patches._backup(live, keys[name])
    shared = [backup.items[h][r] is live.items[h][r] for h in live.items for r in live.items[h]]
    assert shared.count(False) == 1  # only the named item was copied
    assert len(shared) == 50


def test_an_items_size_limit_is_kept_and_measured_once_per_attribute(
    table: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, name = table
    measured = {"count": 0}
    original_size = moto_patches._size_of

    def counting_size(value: object) -> int:
        measured["count"] += 1
        return original_size(value)

    monkeypatch.setattr(moto_patches, "_size_of", counting_size)
    wide = {"pk": {"S": "wide"}, "sk": {"N": "1"}, **{format(n, "x"): {"N": "1"} for n in range(20_000)}}
    client.put_item(TableName=name, Item=wide)
    assert measured["count"] < 10 * len(wide)  # moto alone measures the whole item at every attribute: n² / 2
    assert len(client.get_item(TableName=name, Key={"pk": {"S": "wide"}, "sk": {"N": "1"}})["Item"]) == len(wide)
    too_large = {"pk": {"S": "big"}, "sk": {"N": "1"}, "blob": {"S": "x" * 300_000}, "more": {"S": "y" * 110_000}}
    with pytest.raises(client.exceptions.ClientError, match="Item size has exceeded the maximum allowed size"):
        client.put_item(TableName=name, Item=too_large)
    within = {"pk": {"S": "ok"}, "sk": {"N": "1"}, "blob": {"S": "x" * 300_000}, "more": {"S": "y" * 90_000}}
    client.put_item(TableName=name, Item=within)


def test_objects_moto_no_longer_uses_are_freed_and_its_dashboard_still_answers(
    table: tuple[Any, str], moto_endpoint: str
) -> None:
    import gc
    import json
    import urllib.request

    from moto.s3.models import FakeKey

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="patched-checkpoints")
    for n in range(300):  # as the poller rewrites its checkpoint after every batch
        s3.put_object(Bucket="patched-checkpoints", Key="checkpoint", Body=str(n).encode())
    gc.collect()
    alive = [key for key in FakeKey.instances_tracked if getattr(key, "bucket_name", "") == "patched-checkpoints"]
    assert 1 <= len(alive) < 10  # moto alone keeps all 300 versions for ever
    assert s3.get_object(Bucket="patched-checkpoints", Key="checkpoint")["Body"].read() == b"299"
    with urllib.request.urlopen(f"{moto_endpoint}/moto-api/data.json", timeout=30) as response:
        assert "dynamodb" in json.loads(response.read())


def test_a_trails_logging_times_are_utcs_on_a_machine_west_of_utc(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """moto read its UTC clock as local time: in Honolulu a trail started now said it started 10 hours from now."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("TZ", "Pacific/Honolulu")
    time.tzset()
    try:
        moto_patches.apply()
        name = f"patched-trail-{next(_names)}"
        boto3.client("s3").create_bucket(Bucket=name)
        cloudtrail = boto3.client("cloudtrail")
        cloudtrail.create_trail(Name=name, S3BucketName=name)
        cloudtrail.start_logging(Name=name)
        started = cloudtrail.get_trail_status(Name=name)["StartLoggingTime"]
        cloudtrail.stop_logging(Name=name)
        stopped = cloudtrail.get_trail_status(Name=name)["StopLoggingTime"]
        now = datetime.now(UTC)
        for moment in (started, stopped):
            assert abs((moment - now).total_seconds()) < 60, (moment, now)
        assert started <= stopped
    finally:
        monkeypatch.undo()  # the zone the tests run in, whatever it was
        time.tzset()
