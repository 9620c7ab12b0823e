"""The packaged template, checked offline with the tools AWS uses (cfn-lint, the SAM translator) and by reading it."""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pytest

from chalicelib.columnar import COMPACTED_FILE_SCHEMA
from chalicelib.compaction import contested_objects
from chalicelib.ingest import BATCH_SIZE, MAXIMUM_BATCHING_WINDOW_SECONDS
from chalicelib.query import DENIED_CODES
from chalicelib.reconcile import DayReport, backfill_object_key
from chalicelib.records import build_object_key
from chalicelib.schema import AUDIT_COLUMNS
from chalicelib.selectors import READ_OPERATIONS, STATEMENT_OPERATIONS, WRITE_OPERATIONS, unlogged_calls
from chalicelib.superseded import DEFAULT_GRACE_SECONDS, Superseded
from deutzia_local.poller import MAXIMUM_RETRY_ATTEMPTS
from infra.render import (
    TEMPLATE,
    TemplateError,
    load_template,
    render_infrastructure,
    render_merge_template,
    without_resources,
    write_columns,
)
from tests.infra.conftest import ROOT, run_command
from tests.infra.intrinsics import Resolver

AUDITOR = "arn:aws:iam::123456789012:role/auditor"
# What the API, reconciliation and the trail watch may ask of the trail: its status, settings and selectors, no more.
TRAIL_READS = ["cloudtrail:GetTrailStatus", "cloudtrail:GetTrail", "cloudtrail:GetEventSelectors"]


def _resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {name: body for name, body in template["Resources"].items() if body.get("Type") == resource_type}


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


@pytest.mark.parametrize("name", ["package/sam.json", "templates/infrastructure.json"])
def test_cfn_lint_reports_no_errors(package_dir: Path, name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cfnlint", str(package_dir / name)], capture_output=True, text=True, check=False
    )
    print(result.stdout)
    assert result.returncode & 2 == 0, result.stdout + result.stderr  # bit 2: errors; warnings are printed


def test_sam_translator_leaves_plain_cloudformation(translated: dict[str, Any]) -> None:
    types = {body["Type"] for body in translated["Resources"].values()}
    assert not [t for t in types if t.startswith("AWS::Serverless::")]
    assert {"AWS::Lambda::Function", "AWS::Lambda::EventSourceMapping", "AWS::ApiGateway::RestApi"} <= types


@pytest.mark.parametrize("which", ["merged", "translated", "infrastructure"])
def test_every_intrinsic_has_exactly_one_key(which: str, request: pytest.FixtureRequest) -> None:
    template = request.getfixturevalue(which)
    for node in _walk(template):
        intrinsic = [key for key in node if key == "Ref" or key.startswith("Fn::")]
        if intrinsic:
            assert len(node) == 1, f"{intrinsic} shares its mapping with {sorted(node)}"


def _mapping_of(translated: dict[str, Any], function: str) -> dict[str, Any]:
    mappings = _resources(translated, "AWS::Lambda::EventSourceMapping").values()
    (mapping,) = [m for m in mappings if m["Properties"]["FunctionName"] == {"Ref": function}]
    properties: dict[str, Any] = mapping["Properties"]
    return properties


def test_ingest_mapping_reports_failures_bisects_retries_and_has_a_failure_queue(translated: dict[str, Any]) -> None:
    properties = _mapping_of(translated, "IngestAuditEvents")
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BisectBatchOnFunctionError"] is True
    assert properties["MaximumRetryAttempts"] == MAXIMUM_RETRY_ATTEMPTS  # the local poller plays the same mapping
    assert properties["BatchSize"] == BATCH_SIZE
    # The window is the stack's to choose (cost against latency); by default the app's, which the local poller plays.
    assert properties["MaximumBatchingWindowInSeconds"] == {"Ref": "IngestBatchingWindowSeconds"}
    window = translated["Parameters"]["IngestBatchingWindowSeconds"]
    assert (window["Default"], window["MinValue"], window["MaxValue"]) == (MAXIMUM_BATCHING_WINDOW_SECONDS, 0, 300)
    assert 0 < properties["MaximumRecordAgeInSeconds"] < 168 * 3600  # before the stream drops the record
    assert properties["StartingPosition"] == "TRIM_HORIZON"
    assert properties["EventSourceArn"] == {"Fn::Sub": "${AuditStream.Arn}"}
    assert properties["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["IngestFailureQueue", "Arn"]}
    functions = _resources(translated, "AWS::Lambda::Function")
    ingest = next(body for name, body in functions.items() if name == "IngestAuditEvents")
    assert ingest["Properties"]["Environment"]["Variables"]["REPORT_BATCH_ITEM_FAILURES"] == "true"
    api = functions["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert "REPORT_BATCH_ITEM_FAILURES" not in api or api["REPORT_BATCH_ITEM_FAILURES"] == "false"


def test_ingest_and_replay_get_a_whole_vcpu(translated: dict[str, Any]) -> None:
    """Lambda gives CPU in proportion to memory, a whole vCPU at 1,769 MB; at Chalice's default of 128 MB ingest
    would keep up with a fifth of a shard, and a full 6 MB batch would not fit in memory (`make bench` measures)."""
    functions = _resources(translated, "AWS::Lambda::Function")
    for name in ("IngestAuditEvents", "ReplayFailedBatches"):
        assert functions[name]["Properties"]["MemorySize"] == 1769, name


def test_the_api_gets_a_cold_start_people_do_not_wait_on(translated: dict[str, Any]) -> None:
    """Importing the app takes about 0.25 s on a whole vCPU; at Chalice's default of 128 MB (a fourteenth of one) the
    first request after a cold start would wait about 3 s for it, at 1,024 MB about 0.4 s."""
    functions = _resources(translated, "AWS::Lambda::Function")
    assert functions["APIHandler"]["Properties"]["MemorySize"] == 1024


def test_replay_reads_the_failure_queue_one_message_at_a_time_with_a_dead_letter_queue(
    translated: dict[str, Any],
) -> None:
    properties = _mapping_of(translated, "ReplayFailedBatches")
    assert properties["EventSourceArn"] == {"Fn::Sub": "${IngestFailureQueue.Arn}"}
    assert properties["BatchSize"] == 1
    queues = _resources(translated, "AWS::SQS::Queue")
    queue = queues["IngestFailureQueue"]["Properties"]
    function = _resources(translated, "AWS::Lambda::Function")["ReplayFailedBatches"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["ReplayDeadLetterQueue", "Arn"]}
    assert function["Role"] == {"Fn::GetAtt": ["ReplayFunctionRole", "Arn"]}
    assert function["Environment"]["Variables"]["INGEST_FAILURE_QUEUE"] == {
        "Fn::GetAtt": ["IngestFailureQueue", "QueueName"]
    }
    role = _resources(translated, "AWS::IAM::Role")["ReplayFunctionRole"]["Properties"]
    actions = {
        action
        for policy in role["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        for action in ([statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"])
    }
    assert "sqs:SendMessage" not in actions
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "kinesis:GetRecords", "s3:PutObject"} <= actions
    assert not [action for action in actions if action.startswith(("s3:Get", "s3:Delete", "athena:", "glue:"))]


@pytest.mark.parametrize(
    ("parameters", "names", "writes_only"),
    [
        ({"AuditedTableNames": "Orders,Users"}, ["/Orders", "/Users"], False),
        ({"AuditedTableNames": "Orders", "AuditReads": "false"}, ["/Orders"], True),
        ({"AuditedTableNames": "Orders", "CreateDemoTable": "true"}, ["/Orders", "/audit-demo"], False),
        ({"CreateDemoTable": "true", "AuditReads": "false"}, ["/audit-demo"], True),
    ],
)
def test_trail_logs_data_events_of_exactly_the_audited_tables(
    merged: dict[str, Any], parameters: dict[str, str], names: list[str], writes_only: bool
) -> None:
    resolver = Resolver(merged, parameters)
    (trail,) = _resources(merged, "AWS::CloudTrail::Trail").values()
    properties = resolver.resolve(trail["Properties"])
    assert properties["EnableLogFileValidation"] is True
    assert properties["KMSKeyId"] == "<AuditKey.Arn>"
    assert properties["CloudWatchLogsLogGroupArn"] == "<TrailLogGroup.Arn>"
    (selector,) = properties["AdvancedEventSelectors"]
    fields = {field["Field"]: field for field in selector["FieldSelectors"]}
    assert fields["eventCategory"]["Equals"] == ["Data"]
    assert fields["resources.type"]["Equals"] == ["AWS::DynamoDB::Table"]
    assert fields["resources.ARN"]["StartsWith"] == ["arn:aws:dynamodb:eu-west-1:123456789012:table/"]
    assert fields["resources.ARN"]["EndsWith"] == names
    assert ("readOnly" in fields) is writes_only
    if writes_only:
        assert fields["readOnly"]["Equals"] == ["false"]
    variables = resolver.resolve(merged["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"])
    assert variables["AUDITED_TABLES"].split(",") == [name.lstrip("/") for name in names]
    # What the trail watch checks these selectors against: every call on each audited table, reads too unless the
    # stack audits writes only; they log exactly that, so it names nothing, and a table not audited is left out.
    tables = [name.lstrip("/") for name in names]
    for function in ("APIHandler", "ReconcileAuditTrail", "WatchTrail"):
        told = resolver.resolve(merged["Resources"][function]["Properties"]["Environment"]["Variables"])
        assert (told["AUDITED_TABLES"].split(","), told["AUDIT_READS"]) == (tables, str(not writes_only).lower())
        # and where the trail must send its files and events, which the same checks hold it to
        assert (told["TRAIL_BUCKET"], told["TRAIL_LOG_GROUP"]) == (
            resolver.resolve({"Ref": "TrailBucket"}),
            resolver.resolve({"Ref": "TrailLogGroup"}),
        )
        assert (properties["S3BucketName"], properties["CloudWatchLogsLogGroupArn"]) == (
            told["TRAIL_BUCKET"],
            resolver.resolve({"Fn::GetAtt": ["TrailLogGroup", "Arn"]}),
        )
    arns = {table: f"arn:aws:dynamodb:eu-west-1:123456789012:table/{table}" for table in [*tables, "Other"]}
    left_out = unlogged_calls([], properties["AdvancedEventSelectors"], arns, reads=True)
    assert left_out.pop("Other") == sorted(
        [*WRITE_OPERATIONS, *STATEMENT_OPERATIONS, *READ_OPERATIONS, *(f"{n} (reads)" for n in STATEMENT_OPERATIONS)]
    )
    reads = sorted([*READ_OPERATIONS, *(f"{name} (reads)" for name in STATEMENT_OPERATIONS)])
    assert left_out == ({table: reads for table in tables} if writes_only else {})
    assert unlogged_calls([], properties["AdvancedEventSelectors"], arns, reads=False).keys() == {"Other"}


def test_every_bucket_is_encrypted_versioned_public_blocked_and_tls_only(merged: dict[str, Any]) -> None:
    buckets = _resources(merged, "AWS::S3::Bucket")
    assert set(buckets) == {"TrailBucket", "AuditBucket", "AthenaResultsBucket"}
    policies = {
        body["Properties"]["Bucket"]["Ref"]: body for body in _resources(merged, "AWS::S3::BucketPolicy").values()
    }
    for name, bucket in buckets.items():
        properties = bucket["Properties"]
        (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms", name
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}, name
        assert all(properties["PublicAccessBlockConfiguration"].values()), name
        assert len(properties["PublicAccessBlockConfiguration"]) == 4, name
        assert properties["LifecycleConfiguration"]["Rules"], name
        statements = policies[name]["Properties"]["PolicyDocument"]["Statement"]
        assert {
            "Effect": "Deny",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }.items() <= next(s for s in statements if s["Sid"] == "DenyInsecureTransport").items(), name


def test_the_stores_kept_when_the_stack_is_deleted_keep_the_key_that_encrypts_them(merged: dict[str, Any]) -> None:
    """Deleting the stack keeps the trail's files and the audit records; a deleted key would make them unreadable once
    its waiting period ended, so the key is kept too."""
    resources = merged["Resources"]
    kept = [name for name, body in resources.items() if body.get("DeletionPolicy") == "Retain"]
    # Every bucket: CloudFormation cannot delete one that holds objects, so deleting the stack would fail at it.
    buckets = set(_resources(merged, "AWS::S3::Bucket"))
    assert buckets == {"TrailBucket", "AuditBucket", "AthenaResultsBucket"}
    assert buckets | {"AuditKey"} <= set(kept)
    for name in kept:
        body = resources[name]
        assert body.get("UpdateReplacePolicy") == "Retain", name
        if body["Type"] == "AWS::S3::Bucket":
            (rule,) = body["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            (key, _) = rule["ServerSideEncryptionByDefault"]["KMSMasterKeyID"]["Fn::GetAtt"]
            assert resources[key].get("DeletionPolicy") == "Retain", (name, key)


def test_auditors_named_may_use_the_key_through_s3_only(merged: dict[str, Any]) -> None:
    def statements(auditors: str) -> dict[str, Any]:
        resolver = Resolver(merged, {"AuditedTableNames": "Orders", "AuditorPrincipalArns": auditors})
        policy = resolver.resolve(merged["Resources"]["AuditKey"]["Properties"]["KeyPolicy"])
        return {statement["Sid"]: statement for statement in policy["Statement"]}

    assert "AuditorsReadTheAuditThroughS3" not in statements("")
    granted = statements(f"{AUDITOR},arn:aws:iam::123456789012:role/audit-*")["AuditorsReadTheAuditThroughS3"]
    assert granted["Action"] == ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]  # Athena writes results
    assert granted["Condition"]["ArnLike"] == {"aws:PrincipalArn": [AUDITOR, "arn:aws:iam::123456789012:role/audit-*"]}
    assert granted["Condition"]["StringEquals"] == {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}


# What each tool an auditor runs calls, as IAM actions: `deutzia sql --stack` (the stack's outputs, then Athena,
# which reads the catalog and the objects and writes its results with the caller's rights), the console's named
# queries, and `aws cloudtrail validate-logs` (the trail, its public keys, then the digest and log files).
AUDITOR_CALLS = {
    "cloudformation:DescribeStacks": ["arn:aws:cloudformation:eu-west-1:123456789012:stack/audit/<id>"],
    "athena:StartQueryExecution": ["arn:aws:athena:eu-west-1:123456789012:workgroup/<AthenaWorkGroup>"],
    "athena:GetQueryExecution": ["arn:aws:athena:eu-west-1:123456789012:workgroup/<AthenaWorkGroup>"],
    "athena:GetQueryResults": ["arn:aws:athena:eu-west-1:123456789012:workgroup/<AthenaWorkGroup>"],
    "athena:ListNamedQueries": ["arn:aws:athena:eu-west-1:123456789012:workgroup/<AthenaWorkGroup>"],
    "athena:BatchGetNamedQuery": ["arn:aws:athena:eu-west-1:123456789012:workgroup/<AthenaWorkGroup>"],
    "glue:GetTable": [
        "arn:aws:glue:eu-west-1:123456789012:table/<GlueDatabase>/audit",
        "arn:aws:glue:eu-west-1:123456789012:table/<GlueDatabase>/audit_fresh",
        "arn:aws:glue:eu-west-1:123456789012:table/<GlueDatabase>/cloudtrail_logs",
    ],
    "glue:GetPartitions": ["arn:aws:glue:eu-west-1:123456789012:table/<GlueDatabase>/audit_compacted"],
    "s3:GetObject": [
        "<AuditBucket.Arn>/audit/table_name=Orders/dt=2026-11-28/x.json.gz",
        "<AuditBucket.Arn>/compacted/table_name=Orders/month=2026-10/month-2026-10-x.parquet",
        "<AuditBucket.Arn>/reports/reconcile/dt=2026-11-27/Orders.json",
        "<TrailBucket.Arn>/AWSLogs/123456789012/CloudTrail/eu-west-1/2026/11/28/x.json.gz",
        "<TrailBucket.Arn>/AWSLogs/123456789012/CloudTrail-Digest/eu-west-1/2026/11/28/x.json.gz",
        "<AthenaResultsBucket.Arn>/results/q-1.csv",
    ],
    "s3:PutObject": ["<AthenaResultsBucket.Arn>/results/q-1.csv"],
    "s3:ListBucket": ["<AuditBucket.Arn>", "<TrailBucket.Arn>", "<AthenaResultsBucket.Arn>"],
    "s3:GetBucketLocation": ["<TrailBucket.Arn>", "<AthenaResultsBucket.Arn>"],
    "kms:Decrypt": ["<AuditKey.Arn>"],
    "kms:GenerateDataKey": ["<AuditKey.Arn>"],
    "cloudtrail:DescribeTrails": ["*"],
    "cloudtrail:ListPublicKeys": ["*"],
}


def test_the_auditor_policy_allows_what_the_auditors_tools_call_and_writes_nothing_else(
    merged: dict[str, Any], infrastructure: dict[str, Any]
) -> None:
    resolver = Resolver(merged, {"AuditedTableNames": "Orders"})
    document = resolver.resolve(merged["Resources"]["AuditorPolicy"]["Properties"]["PolicyDocument"])
    allowed = []
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        allowed += [(action, resource) for action in actions for resource in resources]
    stack_id = "arn:aws:cloudformation:eu-west-1:123456789012:stack/audit/<id>"
    for action, targets in AUDITOR_CALLS.items():
        for target in targets:
            assert any(
                action == granted and fnmatch.fnmatchcase(target, pattern.replace("<AWS::StackId>", stack_id))
                for granted, pattern in allowed
            ), (action, target)
    writes = {action for action, resource in allowed if action in ("s3:PutObject", "s3:AbortMultipartUpload")}
    assert writes == {"s3:PutObject", "s3:AbortMultipartUpload"}
    assert {resource for action, resource in allowed if action in writes} == {"<AthenaResultsBucket.Arn>/results/*"}
    assert not [action for action, _ in allowed if action.startswith(("s3:Delete", "glue:Update", "glue:Create"))]
    assert "AuditorPolicy" in infrastructure["Resources"]
    assert merged["Outputs"]["AuditorPolicyArn"]["Value"] == {"Ref": "AuditorPolicy"}


def test_object_lock_is_set_only_when_asked(merged: dict[str, Any]) -> None:
    for mode, expected in (("NONE", None), ("COMPLIANCE", "COMPLIANCE")):
        resolver = Resolver(merged, {"AuditedTableNames": "Orders", "ObjectLockMode": mode})
        for name in ("TrailBucket", "AuditBucket"):
            properties = resolver.resolve(merged["Resources"][name]["Properties"])
            lock = properties.get("ObjectLockConfiguration")
            assert (lock["Rule"]["DefaultRetention"]["Mode"] if lock else None) == expected


def test_no_iam_statement_allows_wildcard_actions(translated: dict[str, Any]) -> None:
    with_auditors = Resolver(translated, {"AuditedTableNames": "Orders", "AuditorPrincipalArns": f"{AUDITOR},x"})
    keys = _resources(translated, "AWS::KMS::Key").values()
    documents = [with_auditors.resolve(body["Properties"]["KeyPolicy"]) for body in keys]
    for role in _resources(translated, "AWS::IAM::Role").values():
        documents += [policy["PolicyDocument"] for policy in role["Properties"].get("Policies", [])]
        assert "ManagedPolicyArns" not in role["Properties"]
    documents += [
        policy["Properties"]["PolicyDocument"] for policy in _resources(translated, "AWS::IAM::ManagedPolicy").values()
    ]
    assert len(documents) >= 7
    for document in documents:
        for statement in document["Statement"]:
            if statement["Effect"] != "Allow":
                continue
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            assert not [action for action in actions if "*" in action], statement
    # Every grant names its resources, but for the one action IAM gives no resource type: reading CloudTrail's event
    # history, which the trail watch (the selectors set between two runs, who made a change) and reconciliation (the
    # days they overlap) do, and no other role.
    readers = {"TrailWatchFunctionRole", "ReconcileFunctionRole"}
    for name, role in _resources(translated, "AWS::IAM::Role").items():
        for policy in role["Properties"]["Policies"]:
            for statement in policy["PolicyDocument"]["Statement"]:
                unnamed = name in readers and statement["Action"] == "cloudtrail:LookupEvents"
                assert (statement["Resource"] == "*") == unnamed, statement


def test_glue_columns_are_the_code_record_schema(merged: dict[str, Any]) -> None:
    table = merged["Resources"]["AuditTable"]["Properties"]["TableInput"]
    columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert columns == [(column.name, column.glue_type) for column in AUDIT_COLUMNS]
    assert [(c["Name"], c["Type"]) for c in table["PartitionKeys"]] == [("table_name", "string"), ("dt", "string")]
    assert table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"] == "org.openx.data.jsonserde.JsonSerDe"


def test_partition_projection_covers_the_audited_tables_and_dates(merged: dict[str, Any]) -> None:
    resolver = Resolver(merged, {"AuditedTableNames": "Orders,Users"})
    parameters = resolver.resolve(merged["Resources"]["AuditTable"]["Properties"]["TableInput"]["Parameters"])
    assert parameters["projection.enabled"] == "true"
    assert (parameters["projection.table_name.type"], parameters["projection.table_name.values"]) == (
        "enum",
        "Orders,Users",
    )
    assert (parameters["projection.dt.type"], parameters["projection.dt.format"]) == ("date", "yyyy-MM-dd")
    assert parameters["storage.location.template"] == "s3://<AuditBucket>/audit/table_name=${table_name}/dt=${dt}/"


def test_crawler_runs_daily_after_midnight_on_both_tiers_tables(merged: dict[str, Any]) -> None:
    """A crawl is billed 10 minutes at least (about $0.07): every 10 minutes would cost some $320 a month for the
    partitions of days, which appear once a day (Athena reads partition projection, not them)."""
    (crawler,) = _resources(merged, "AWS::Glue::Crawler").values()
    assert crawler["Properties"]["Schedule"]["ScheduleExpression"] == {"Ref": "CrawlerScheduleExpression"}
    assert merged["Parameters"]["CrawlerScheduleExpression"]["Default"] == "cron(20 0 * * ? *)"
    # It adds partitions and new columns, and never changes or drops the columns the template defines.
    configuration = json.loads(crawler["Properties"]["Configuration"])
    assert configuration["CrawlerOutput"] == {
        "Partitions": {"AddOrUpdateBehavior": "InheritFromTable"},
        "Tables": {"AddOrUpdateBehavior": "MergeNewColumns"},
    }
    policy = crawler["Properties"]["SchemaChangePolicy"]
    assert policy == {"UpdateBehavior": "UPDATE_IN_DATABASE", "DeleteBehavior": "LOG"}
    # Both tiers: a tool that reads the catalog's partitions, not projection, would otherwise see minutes of history.
    tables = crawler["Properties"]["Targets"]["CatalogTargets"][0]["Tables"]
    assert tables == [{"Ref": "AuditTable"}, {"Ref": "AuditCompactedTable"}]


def test_workgroups_are_enabled_enforced_encrypted_and_capped(merged: dict[str, Any]) -> None:
    """Lookups and ad hoc SQL share one workgroup; reconciliation, whose scan grows with the calls a day, has its
    own, with a cutoff of its own."""
    workgroups = _resources(merged, "AWS::Athena::WorkGroup")
    assert set(workgroups) == {"AthenaWorkGroup", "ReconcileWorkGroup"}
    for name, cutoff in (
        ("AthenaWorkGroup", "BytesScannedCutoffPerQuery"),
        ("ReconcileWorkGroup", "ReconcileBytesScannedCutoffPerQuery"),
    ):
        configuration = workgroups[name]["Properties"]["WorkGroupConfiguration"]
        assert workgroups[name]["Properties"]["State"] == "ENABLED"
        assert configuration["EnforceWorkGroupConfiguration"] is True
        assert configuration["ResultConfiguration"]["EncryptionConfiguration"]["EncryptionOption"] == "SSE_KMS"
        assert configuration["BytesScannedCutoffPerQuery"] == {"Ref": cutoff}
    parameters = merged["Parameters"]
    # A run reads two days' trail files, about 0.3 KB a call: the lookups' 10 GB would cancel every run of an account
    # making more than about 385 calls a second.
    assert parameters["BytesScannedCutoffPerQuery"]["Default"] == 10_000_000_000
    assert parameters["ReconcileBytesScannedCutoffPerQuery"]["Default"] == 1_000_000_000_000
    assert len(_resources(merged, "AWS::Athena::NamedQuery")) == 8
    for query in _resources(merged, "AWS::Athena::NamedQuery").values():
        assert query["Properties"]["WorkGroup"] == {"Ref": "AthenaWorkGroup"}


def test_audit_routes_require_sigv4_and_health_does_not(merged: dict[str, Any]) -> None:
    body = merged["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    assert body["paths"]["/audit"]["get"]["security"] == [{"sigv4": []}]
    assert body["paths"]["/audit/coverage"]["get"]["security"] == [{"sigv4": []}]
    assert body["securityDefinitions"]["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert "security" not in body["paths"]["/health"]["get"]


def test_outputs_name_everything_a_user_needs(merged: dict[str, Any]) -> None:
    expected = {
        "EndpointURL",
        "AuditBucketName",
        "TrailBucketName",
        "AthenaWorkGroupName",
        "GlueDatabaseName",
        "AuditStreamName",
        "IngestFailureQueueUrl",
        "AuditedTables",
        "ReconcileFunctionName",
        "TrailTableName",
        "TrailArn",
        "ReconcileWorkGroupName",
    }
    assert expected <= set(merged["Outputs"])


def test_stores_use_the_stack_key(merged: dict[str, Any]) -> None:
    key = {"Fn::GetAtt": ["AuditKey", "Arn"]}
    resources = merged["Resources"]
    assert resources["AuditStream"]["Properties"]["StreamEncryption"] == {"EncryptionType": "KMS", "KeyId": key}
    assert resources["IngestFailureQueue"]["Properties"]["KmsMasterKeyId"] == key
    assert resources["TrailLogGroup"]["Properties"]["KmsKeyId"] == key
    assert resources["Trail"]["Properties"]["KMSKeyId"] == key
    assert resources["AuditKey"]["Properties"]["EnableKeyRotation"] is True


def test_alarms_watch_iterator_age_failure_queue_and_errors(merged: dict[str, Any]) -> None:
    alarms = [
        body for body in _resources(merged, "AWS::CloudWatch::Alarm").values() if "Metrics" not in body["Properties"]
    ]
    metrics = {body["Properties"]["MetricName"] for body in alarms}
    assert metrics == {
        "IteratorAge",
        "ApproximateAgeOfOldestMessage",
        "ApproximateNumberOfMessagesVisible",
        "Errors",
        "WriteProvisionedThroughputExceeded",
        "ContestedCopies",
        "DeniedCalls",
    }
    watched = {
        str(body["Properties"]["Dimensions"][0]["Value"]) for body in alarms if "Dimensions" in body["Properties"]
    }
    assert {"{'Ref': 'ReplayFailedBatches'}", "{'Fn::GetAtt': ['ReplayDeadLetterQueue', 'QueueName']}"} <= watched


def test_an_alarm_fires_when_calls_on_the_audited_tables_are_refused_their_permission(merged: dict[str, Any]) -> None:
    counted = merged["Resources"]["DeniedCallsMetricFilter"]["Properties"]
    assert counted["LogGroupName"] == {"Ref": "TrailLogGroup"}  # the trail's events, as they reach the stream
    (metric,) = counted["MetricTransformations"]
    assert (metric["MetricNamespace"], metric["MetricName"], metric["MetricValue"]) == ("Deutzia", "DeniedCalls", "1")
    # The codes it counts are those GET /audit's result=denied finds (CloudWatch's `*` is SQL's `%`).
    globs = re.findall(r'\$\.errorCode = "([^"]+)"', counted["FilterPattern"])
    assert globs == [code.replace("%", "*") for code in DENIED_CODES]
    assert counted["FilterPattern"] == "{ " + " || ".join(f'($.errorCode = "{glob}")' for glob in globs) + " }"
    alarm = merged["Resources"]["DeniedCallsAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"], "Dimensions" in alarm) == ("Deutzia", "DeniedCalls", False)
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Sum", 300, 1)
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (
        {"Ref": "DeniedCallsAlarmThreshold"},
        "GreaterThanThreshold",
    )
    assert merged["Parameters"]["DeniedCallsAlarmThreshold"]["Default"] == 0  # any
    assert "--result denied" in alarm["AlarmDescription"]  # where to look: who, what and from where


def test_the_apis_stage_takes_a_bounded_rate_of_requests_on_every_route(translated: dict[str, Any]) -> None:
    (stage,) = _resources(translated, "AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["MethodSettings"] == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": {"Ref": "ApiRequestsPerSecond"},
            "ThrottlingBurstLimit": {"Ref": "ApiBurstRequests"},
        }
    ]
    parameters = translated["Parameters"]
    assert (parameters["ApiRequestsPerSecond"]["Default"], parameters["ApiBurstRequests"]["Default"]) == (10, 20)


def _metric(namespace: str, name: str, dimension: str, resource: str) -> dict[str, Any]:
    """A CloudWatch metric of one dimension naming one of the stack's resources, as the template writes it."""
    return {"Namespace": namespace, "MetricName": name, "Dimensions": [{"Name": dimension, "Value": {"Ref": resource}}]}


# The records reaching the stream, which two alarms watch.
STREAM_RECORDS = _metric("AWS/Kinesis", "IncomingRecords", "StreamName", "AuditStream")


def _watched_metrics(alarm: dict[str, Any]) -> dict[str, Any]:
    """A metric-math alarm's metrics by id."""
    return {query["Id"]: query["MetricStat"] for query in alarm["Metrics"] if "MetricStat" in query}


def _expression(alarm: dict[str, Any]) -> str:
    """The expression a metric-math alarm fires on."""
    (expression,) = [query for query in alarm["Metrics"] if query.get("ReturnData")]
    return str(expression["Expression"])


def test_an_alarm_fires_when_the_stream_takes_records_and_ingest_is_not_invoked(merged: dict[str, Any]) -> None:
    alarm = merged["Resources"]["IngestStalledAlarm"]["Properties"]
    watched = _watched_metrics(alarm)
    assert {name: stat["Metric"] for name, stat in watched.items()} == {
        "incoming": STREAM_RECORDS,
        "invocations": _metric("AWS/Lambda", "Invocations", "FunctionName", "IngestAuditEvents"),
    }
    assert {stat["Period"] for stat in watched.values()} == {900}
    assert _expression(alarm) == "IF(FILL(incoming, 0) > 0, IF(FILL(invocations, 0) == 0, 1, 0), 0)"
    # On the `chalice deploy` path the stack has no ingest function to watch.
    assert "IngestStalledAlarm" not in render_infrastructure(load_template())["Resources"]


def test_a_fast_path_that_stops_before_ingest_raises_an_alarm() -> None:
    """The subscription failing to deliver, gone, or the stream refusing writes for want of shards, leaves ingest idle,
    so neither its errors nor its iterator age say so: three alarms of the stack itself (on the `chalice deploy` path
    too) watch the delivery."""
    standalone = render_infrastructure(load_template())
    alarms = standalone["Resources"]
    delivery = alarms["TrailDeliveryErrorsAlarm"]["Properties"]
    (query,) = delivery["Metrics"]
    # A Metrics Insights query over the subscription metric's whole dimension set, narrowed by the log group alone.
    assert query["Expression"] == {
        "Fn::Sub": 'SELECT SUM(DeliveryErrors) FROM SCHEMA("AWS/Logs", DestinationType, FilterName, LogGroupName) '
        "WHERE LogGroupName = '${TrailLogGroup}'"
    }
    assert alarms["TrailSubscription"]["Properties"]["LogGroupName"] == {"Ref": "TrailLogGroup"}
    assert (query["ReturnData"], query["Period"], delivery["Threshold"], delivery["ComparisonOperator"]) == (
        True,
        300,
        0,
        "GreaterThanThreshold",
    )
    throttled = alarms["AuditStreamThrottledAlarm"]["Properties"]
    assert (throttled["Namespace"], throttled["Dimensions"]) == (
        "AWS/Kinesis",
        [{"Name": "StreamName", "Value": {"Ref": "AuditStream"}}],
    )
    assert throttled["Period"] * throttled["EvaluationPeriods"] == 900  # sustained, not one burst
    # Events reach the log group and none the stream, two periods on end: the subscription deleted or replaced.
    cut = alarms["TrailEventsNotForwardedAlarm"]["Properties"]
    assert {name: stat["Metric"] for name, stat in _watched_metrics(cut).items()} == {
        "logged": _metric("AWS/Logs", "IncomingLogEvents", "LogGroupName", "TrailLogGroup"),
        "streamed": STREAM_RECORDS,
    }
    assert _expression(cut) == "IF(FILL(logged, 0) > 0, IF(FILL(streamed, 0) == 0, 1, 0), 0)"
    assert (cut["EvaluationPeriods"], cut["DatapointsToAlarm"], cut["Threshold"]) == (2, 2, 0)
    topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for alarm in (delivery, throttled, cut):
        assert (alarm["TreatMissingData"], alarm["AlarmActions"]) == ("notBreaching", topic)


def test_standalone_stack_has_no_chalice_resources_and_keeps_the_rest() -> None:
    template = load_template()
    standalone = render_infrastructure(template)
    merge = render_merge_template(template)
    assert "IngestAuditEvents" not in standalone["Resources"]
    assert "IngestErrorsAlarm" not in standalone["Resources"]  # it watches a function this stack does not have
    assert {"AuditBucket", "Trail", "AuditStream", "IngestFunctionRole", "AuditTable"} <= set(standalone["Resources"])
    assert {"IngestFunctionRoleArn", "ApiFunctionRoleArn", "AuditStreamName"} <= set(standalone["Outputs"])
    assert set(standalone["Resources"]) < set(merge["Resources"])


MOTO_TYPES = {
    "AWS::DynamoDB::Table",
    "AWS::S3::Bucket",
    "AWS::Kinesis::Stream",
    "AWS::Logs::LogGroup",
    "AWS::SQS::Queue",
    "AWS::KMS::Key",
    "AWS::IAM::Role",
}


def test_resources_moto_implements_are_created_from_the_template(
    infrastructure: dict[str, Any], moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    others = {name for name, body in infrastructure["Resources"].items() if body["Type"] not in MOTO_TYPES}
    template = without_resources({k: v for k, v in infrastructure.items() if k != "Rules"}, others)
    assert {body["Type"] for body in template["Resources"].values()} == MOTO_TYPES
    cloudformation = boto3.client("cloudformation")
    parameters = [
        {"ParameterKey": "AuditedTableNames", "ParameterValue": "Orders"},
        {"ParameterKey": "CreateDemoTable", "ParameterValue": "true"},
        {"ParameterKey": "ShardCount", "ParameterValue": "2"},
    ]
    cloudformation.create_stack(
        StackName="audit",
        TemplateBody=json.dumps(template),
        Parameters=parameters,
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    (stack,) = cloudformation.describe_stacks(StackName="audit")["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    created = {
        r["LogicalResourceId"]: r["PhysicalResourceId"]
        for r in cloudformation.describe_stack_resources(StackName="audit")["StackResources"]
    }
    assert set(created) == set(template["Resources"])

    stream = boto3.client("kinesis").describe_stream_summary(StreamName=created["AuditStream"])[
        "StreamDescriptionSummary"
    ]
    assert stream["OpenShardCount"] == 2  # moto ignores StreamEncryption: test_stores_use_the_stack_key reads it
    s3 = boto3.client("s3")
    for bucket in ("TrailBucket", "AuditBucket", "AthenaResultsBucket"):
        encryption = s3.get_bucket_encryption(Bucket=created[bucket])["ServerSideEncryptionConfiguration"]
        assert encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
        # moto's CloudFormation ignores VersioningConfiguration; the template test above reads it.
    queue = boto3.client("sqs").get_queue_attributes(QueueUrl=created["IngestFailureQueue"], AttributeNames=["All"])
    assert queue["Attributes"]["KmsMasterKeyId"]
    table = boto3.client("dynamodb").describe_table(TableName="audit-demo")["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    groups = boto3.client("logs").describe_log_groups(logGroupNamePrefix="/deutzia/audit/")["logGroups"]
    retention = {group["logGroupName"].removeprefix("/deutzia/audit/"): group["retentionInDays"] for group in groups}
    functions = ("api", "compaction", "ingest", "reconcile", "replay", "trail-watch")
    assert retention == {"cloudtrail": 30} | dict.fromkeys(functions, 90)
    role = boto3.client("iam").get_role(RoleName="audit-ingest")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}


def test_chalice_package_with_the_yaml_template_itself_gives_the_same_glue_tables_and_view(
    merged: dict[str, Any], tmp_path: Path
) -> None:
    offline = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    wheels = ROOT / ".venv" / "wheelhouse"
    offline.update(AWS_DEFAULT_REGION="us-east-1", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels))
    chalice = str(Path(sys.executable).parent / "chalice")
    merge = ["--merge-template", "infra/template.yaml"]
    run_command([chalice, "package", "--stage", "prod", *merge, str(tmp_path)], offline)
    packaged = load_template(tmp_path / "sam.yaml")
    for name in ("AuditTable", "AuditCompactedTable", "AuditView"):
        assert packaged["Resources"][name] == merged["Resources"][name], name


def test_a_template_whose_columns_drifted_is_refused_and_rewritten_by_columns(tmp_path: Path) -> None:
    drifted = tmp_path / "template.yaml"
    drifted.write_text(TEMPLATE.read_text().replace('            - {Name: request_id, Type: "string"}\n', ""))
    with pytest.raises(TemplateError, match=r"infra\.render --columns"):
        render_merge_template(load_template(drifted))
    assert write_columns(drifted) is True
    assert render_merge_template(load_template(drifted)) == render_merge_template(load_template())
    assert write_columns(drifted) is False


def test_the_compacted_tier_is_a_parquet_table_projected_by_table_and_month(merged: dict[str, Any]) -> None:
    table = merged["Resources"]["AuditCompactedTable"]["Properties"]["TableInput"]
    assert table["Name"] == "audit_compacted"
    columns = [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]]
    assert columns == [*((column.name, column.glue_type) for column in AUDIT_COLUMNS), ("dt", "string")]
    assert [(c["Name"], c["Type"]) for c in table["PartitionKeys"]] == [("table_name", "string"), ("month", "string")]
    serde = table["StorageDescriptor"]["SerdeInfo"]["SerializationLibrary"]
    assert serde == "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    parameters = Resolver(merged, {"AuditedTableNames": "Orders"}).resolve(table["Parameters"])
    assert (parameters["projection.month.format"], parameters["projection.month.interval.unit"]) == (
        "yyyy-MM",
        "MONTHS",
    )
    assert parameters["projection.table_name.values"] == "Orders"
    template = "s3://<AuditBucket>/compacted/table_name=${table_name}/month=${month}/"
    assert parameters["storage.location.template"] == template
    assert merged["Resources"]["AuditTable"]["Properties"]["TableInput"]["Name"] == "audit_fresh"


def test_the_audit_view_is_the_codes_view_sql_and_runs_on_duckdb(merged: dict[str, Any]) -> None:
    import duckdb
    import pyarrow as pa

    from chalicelib.columnar import (
        COMPACTED_FILE_SCHEMA,
        COMPACTED_PARTITION_SCHEMA,
        FRESH_PARTITION_SCHEMA,
        RECORD_SCHEMA,
    )
    from chalicelib.query import VIEW_COLUMNS, Relations, build_view_sql

    view = merged["Resources"]["AuditView"]["Properties"]["TableInput"]
    assert (view["Name"], view["TableType"], view["Parameters"]["presto_view"]) == ("audit", "VIRTUAL_VIEW", "true")
    text = Resolver(merged, {"AuditedTableNames": "Orders"}).resolve(view["ViewOriginalText"])
    assert text.startswith("/* Presto View: ")
    assert text.endswith(" */")
    document = json.loads(base64.b64decode(text[len("/* Presto View: ") : -len(" */")]))
    assert document["originalSql"] == build_view_sql(Relations("audit_compacted", "audit_fresh"))
    assert (document["catalog"], document["schema"]) == ("awsdatacatalog", "<GlueDatabase>")
    assert [column["name"] for column in document["columns"]] == list(VIEW_COLUMNS)
    assert {column["type"] for column in document["columns"]} == {"varchar", "integer", "boolean", "array(varchar)"}
    connection = duckdb.connect()
    connection.register(
        "audit_compacted", pa.unify_schemas([COMPACTED_FILE_SCHEMA, COMPACTED_PARTITION_SCHEMA]).empty_table()
    )
    connection.register("audit_fresh", pa.unify_schemas([RECORD_SCHEMA, FRESH_PARTITION_SCHEMA]).empty_table())
    result = connection.sql(document["originalSql"])
    assert result.columns == list(VIEW_COLUMNS)
    assert result.fetchall() == []


def test_compaction_runs_every_5_minutes_one_at_a_time_with_its_own_narrow_role(
    merged: dict[str, Any], translated: dict[str, Any]
) -> None:
    function = merged["Resources"]["CompactAuditRecords"]
    assert function["Properties"]["Events"]["CompactAuditRecordsEvent"]["Properties"]["Schedule"] == "rate(5 minutes)"
    # What a run replaced is deleted by the next one, its grace over by then (a minute to spare for the schedule).
    assert DEFAULT_GRACE_SECONDS + 60 <= 5 * 60
    # A run kept waiting by a long one is dropped once the next is due; a failed run is not retried.
    invoke_configs = [r for r in translated["Resources"].values() if r["Type"] == "AWS::Lambda::EventInvokeConfig"]
    (invoke_config,) = [
        r["Properties"] for r in invoke_configs if r["Properties"]["FunctionName"] == {"Ref": "CompactAuditRecords"}
    ]
    assert (invoke_config["MaximumEventAgeInSeconds"], invoke_config["MaximumRetryAttempts"]) == (300, 0)
    properties = translated["Resources"]["CompactAuditRecords"]["Properties"]
    assert properties["Role"] == {"Fn::GetAtt": ["CompactionFunctionRole", "Arn"]}
    assert properties["Timeout"] == 900
    assert properties["MemorySize"] == {"Ref": "CompactionMemorySize"}
    resolver = Resolver(merged, {"AuditedTableNames": "Orders"})
    assert _reserved(translated, "CompactAuditRecords") == [1, None]
    (policy,) = translated["Resources"]["CompactionFunctionRole"]["Properties"]["Policies"]
    grants = {}
    for statement in resolver.resolve(policy["PolicyDocument"]["Statement"]):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            if action.startswith("s3:"):
                grants.setdefault(action, set()).update(resources)
                if action == "s3:ListBucket":
                    prefixes = ["audit/*", "compacted/*", "superseded/*"]
                    assert statement["Condition"] == {"StringLike": {"s3:prefix": prefixes}}
    tiers_and_notes = {"<AuditBucket.Arn>/audit/*", "<AuditBucket.Arn>/compacted/*", "<AuditBucket.Arn>/superseded/*"}
    assert grants == {
        "s3:ListBucket": {"<AuditBucket.Arn>"},
        "s3:GetObject": tiers_and_notes,
        "s3:DeleteObject": tiers_and_notes,
        "s3:PutObject": {
            "<AuditBucket.Arn>/compacted/*",
            "<AuditBucket.Arn>/superseded/*",
            "<AuditBucket.Arn>/audit/*/contested-*",
        },
    }
    # The notes of what each file replaced are where the compaction role may write them, outside both tiers.
    note = Superseded(
        "compacted/table_name=Orders/month=2024-05/month-2024-05-0.parquet", "Orders", datetime.now(UTC), ()
    )
    assert fnmatch.fnmatchcase(note.note_key, "superseded/*")
    assert not note.note_key.startswith(("audit/", "compacted/"))
    # In the fresh tier, that grant covers the objects compaction writes there, and neither ingest's nor backfill's.
    copy = {name: None for name in COMPACTED_FILE_SCHEMA.names} | {"event_id": "e", "item_index": 0, "dt": "2024-05-01"}
    (written,) = contested_objects("audit/", "Orders", pa.Table.from_pylist([copy], COMPACTED_FILE_SCHEMA))
    ingested = build_object_key("audit/", "Orders", "2024-05-01", "shardId-000000000000", "1", "2")
    backfilled = backfill_object_key("audit/", "Orders", "2024-05-01", "AWSLogs/1/CloudTrail/r/2024/05/01/f.json.gz")
    granted = [fnmatch.fnmatchcase(key, "audit/*/contested-*") for key in (written, ingested, backfilled)]
    assert granted == [True, False, False]
    alarm = merged["Resources"]["CompactionErrorsAlarm"]["Properties"]
    assert (alarm["MetricName"], alarm["Dimensions"][0]["Value"]) == ("Errors", {"Ref": "CompactAuditRecords"})


def test_the_api_may_read_both_tiers_and_the_reports_and_nothing_else_of_the_bucket(translated: dict[str, Any]) -> None:
    (policy,) = translated["Resources"]["ApiFunctionRole"]["Properties"]["Policies"]
    reads = [s for s in policy["PolicyDocument"]["Statement"] if s["Action"] == "s3:GetObject"]
    tiers_and_reports = ["audit/*", "compacted/*", "reports/reconcile/*"]
    assert reads == [
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [{"Fn::Sub": f"${{AuditBucket.Arn}}/{prefix}"} for prefix in tiers_and_reports],
        }
    ]


@pytest.mark.parametrize(
    ("parameters", "tables"),
    [
        ({"AuditedTableNames": "Orders"}, ["Orders"]),
        ({"AuditedTableNames": "Orders,Books", "CreateDemoTable": "true"}, ["Orders", "Books", "audit-demo"]),
        ({"CreateDemoTable": "true"}, ["audit-demo"]),
    ],
)
def test_the_api_may_describe_each_audited_table_in_its_region_and_no_other(
    translated: dict[str, Any], parameters: dict[str, str], tables: list[str]
) -> None:
    (policy,) = translated["Resources"]["ApiFunctionRole"]["Properties"]["Policies"]
    statements = Resolver(translated, parameters).resolve(policy["PolicyDocument"]["Statement"])
    (described,) = [s for s in statements if "dynamodb:" in str(s["Action"])]
    assert described["Action"] == ["dynamodb:DescribeTable", "dynamodb:DescribeTimeToLive"]
    assert described["Condition"] == {"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}
    arns = described["Resource"]
    assert arns == [f"arn:*:dynamodb:*:*:table/{table}" for table in tables]
    granted = [
        any(fnmatch.fnmatchcase(f"arn:aws:dynamodb:eu-west-1:123456789012:table/{name}", arn) for arn in arns)
        for name in [*tables, "Other", f"{tables[0]}x", f"x{tables[0]}"]
    ]
    assert granted == [True] * len(tables) + [False] * 3


def _s3_grants(resolver: Resolver, role: dict[str, Any]) -> dict[str, set[str]]:
    (policy,) = role["Properties"]["Policies"]
    grants: dict[str, set[str]] = {}
    for statement in resolver.resolve(policy["PolicyDocument"]["Statement"]):
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for action in actions:
            if action.startswith("s3:"):
                prefixes = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
                grants.setdefault(action, set()).update(
                    f"{resource} {sorted(prefixes)}" if prefixes else resource for resource in resources
                )
    return grants


def test_reconciliation_runs_daily_one_at_a_time_with_a_role_that_never_deletes(
    merged: dict[str, Any], translated: dict[str, Any]
) -> None:
    function = merged["Resources"]["ReconcileAuditTrail"]
    schedule = function["Properties"]["Events"]["ReconcileAuditTrailEvent"]["Properties"]["Schedule"]
    assert schedule == "cron(30 3 * * ? *)"
    properties = translated["Resources"]["ReconcileAuditTrail"]["Properties"]
    assert properties["Role"] == {"Fn::GetAtt": ["ReconcileFunctionRole", "Arn"]}
    assert properties["Timeout"] == 900
    assert _reserved(translated, "ReconcileAuditTrail") == [1, None]
    variables = properties["Environment"]["Variables"]
    assert variables["ATHENA_WORKGROUP"] == {"Ref": "ReconcileWorkGroup"}
    assert variables["TRAIL_BUCKET"] == {"Ref": "TrailBucket"}
    assert variables["TRAIL_PREFIX"] == {"Fn::Sub": "AWSLogs/${AWS::AccountId}/CloudTrail/"}
    assert variables["TRAIL_ARN"] == {"Fn::GetAtt": ["Trail", "Arn"]}  # whose status each run reads, and nothing else
    (policy,) = translated["Resources"]["ReconcileFunctionRole"]["Properties"]["Policies"]
    trail = [s for s in policy["PolicyDocument"]["Statement"] if "cloudtrail:" in str(s["Action"])]
    assert trail == [
        {"Effect": "Allow", "Action": TRAIL_READS, "Resource": variables["TRAIL_ARN"]},
        {"Effect": "Allow", "Action": "cloudtrail:LookupEvents", "Resource": "*"},
    ]
    resolver = Resolver(merged, {"AuditedTableNames": "Orders"})
    grants = _s3_grants(resolver, translated["Resources"]["ReconcileFunctionRole"])
    assert grants == {
        "s3:ListBucket": {
            "<TrailBucket.Arn> ['AWSLogs/123456789012/CloudTrail/*']",
            "<AuditBucket.Arn> ['audit/*', 'compacted/*', 'reports/reconcile/*', 'reports/trail/*']",
            "<AthenaResultsBucket.Arn>",
        },
        "s3:GetBucketLocation": {"<AthenaResultsBucket.Arn>"},
        "s3:GetObject": {
            "<TrailBucket.Arn>/AWSLogs/123456789012/CloudTrail/*",
            "<AuditBucket.Arn>/audit/*",
            "<AuditBucket.Arn>/compacted/*",
            "<AuditBucket.Arn>/reports/reconcile/*",
            "<AuditBucket.Arn>/reports/trail/*",  # the times the trail watch saw the trail not logging
            "<AthenaResultsBucket.Arn>/results/*",
        },
        "s3:PutObject": {
            "<AuditBucket.Arn>/audit/*",
            "<AuditBucket.Arn>/quarantine/*",
            "<AuditBucket.Arn>/reports/reconcile/*",
            "<AthenaResultsBucket.Arn>/results/*",
        },
        "s3:AbortMultipartUpload": {"<AthenaResultsBucket.Arn>/results/*"},
        "s3:ListMultipartUploadParts": {"<AthenaResultsBucket.Arn>/results/*"},
    }
    (policy,) = translated["Resources"]["ReconcileFunctionRole"]["Properties"]["Policies"]
    athena = [s for s in policy["PolicyDocument"]["Statement"] if str(s["Action"]).startswith("['athena:")]
    assert [resolver.resolve(statement["Resource"]) for statement in athena] == [
        "arn:aws:athena:eu-west-1:123456789012:workgroup/<ReconcileWorkGroup>"
    ]
    # It runs, waits and reads; it never stops a query (one that outlives a run is left for the next to read).
    assert [statement["Action"] for statement in athena] == [
        ["athena:StartQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults"]
    ]
    statements = merged["Resources"]["AuditKey"]["Properties"]["KeyPolicy"]["Statement"]
    (key_users,) = [s for s in statements if s.get("Sid") == "DeutziaRolesUseTheKeyThroughTheirServices"]
    roles = key_users["Condition"]["ArnEquals"]["aws:PrincipalArn"]
    for name in ("replay", "compaction", "reconcile", "trail-watch"):
        assert {"Fn::Sub": f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:role/${{AWS::StackName}}-{name}"} in roles


def test_an_alarm_fires_when_the_trail_itself_stops_logging_or_delivering(merged: dict[str, Any]) -> None:
    alarm = merged["Resources"]["TrailProblemsAlarm"]["Properties"]
    metrics = {metric["Id"]: metric for metric in alarm["Metrics"]}
    # What watch_trail publishes each run with Powertools' Metrics(namespace="Deutzia", service=...), and its errors.
    problems = metrics["problems"]["MetricStat"]
    assert (problems["Metric"], problems["Stat"], problems["Period"]) == (
        {
            "Namespace": "Deutzia",
            "MetricName": "TrailProblems",
            "Dimensions": [{"Name": "service", "Value": "deutzia-trail"}],
        },
        "Maximum",
        300,
    )
    failed = metrics["failed"]["MetricStat"]
    assert (failed["Metric"]["MetricName"], failed["Metric"]["Dimensions"], failed["Period"]) == (
        "Errors",
        [{"Name": "FunctionName", "Value": {"Ref": "WatchTrail"}}],
        300,
    )
    nightly = metrics["nightly"]["MetricStat"]  # reconciliation's own check, should the watch stop running
    assert nightly["Metric"]["Dimensions"] == [{"Name": "service", "Value": "deutzia-reconcile"}]
    assert (nightly["Metric"]["MetricName"], nightly["Stat"]) == ("TrailProblems", "Maximum")
    assert metrics["trail"]["Expression"] == "MAX([FILL(problems, 0), FILL(failed, 0), FILL(nightly, 0)])"
    assert [metric["Id"] for metric in alarm["Metrics"] if metric["ReturnData"]] == ["trail"]
    assert (alarm["EvaluationPeriods"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        1,
        0,
        "GreaterThanThreshold",
    )


def test_the_trail_is_watched_every_5_minutes_by_a_role_that_reads_its_status_and_keeps_when_it_did_not_log(
    merged: dict[str, Any], translated: dict[str, Any]
) -> None:
    function = merged["Resources"]["WatchTrail"]
    assert function["Properties"]["Events"]["WatchTrailEvent"]["Properties"]["Schedule"] == "rate(5 minutes)"
    properties = translated["Resources"]["WatchTrail"]["Properties"]
    assert properties["Role"] == {"Fn::GetAtt": ["TrailWatchFunctionRole", "Arn"]}
    assert properties["Environment"]["Variables"]["TRAIL_ARN"] == {"Fn::GetAtt": ["Trail", "Arn"]}
    (policy,) = translated["Resources"]["TrailWatchFunctionRole"]["Properties"]["Policies"]
    actions = sorted(
        action
        for statement in policy["PolicyDocument"]["Statement"]
        for action in (statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
    )
    assert actions == [
        "cloudtrail:GetEventSelectors",
        "cloudtrail:GetTrail",
        "cloudtrail:GetTrailStatus",
        "cloudtrail:LookupEvents",
        "kms:GenerateDataKey",
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "s3:PutObject",
    ]
    statements = {str(s["Action"]): s["Resource"] for s in policy["PolicyDocument"]["Statement"]}
    trail = {"Resource": statements[str(TRAIL_READS)]}
    assert statements["cloudtrail:LookupEvents"] == "*"  # the event history has no resource; only the watch reads it
    assert trail["Resource"] == {"Fn::GetAtt": ["Trail", "Arn"]}
    # It writes only where it keeps the times the trail did not log, for reconciliation.
    assert statements["s3:PutObject"] == {"Fn::Sub": "${AuditBucket.Arn}/reports/trail/*"}
    assert statements["kms:GenerateDataKey"] == {"Fn::GetAtt": ["AuditKey", "Arn"]}
    # The API reads the same status for GET /audit/coverage's answer, and no other CloudTrail action.
    api = translated["Resources"]["APIHandler"]["Properties"]
    assert api["Environment"]["Variables"]["TRAIL_ARN"] == {"Fn::GetAtt": ["Trail", "Arn"]}
    (policy,) = translated["Resources"]["ApiFunctionRole"]["Properties"]["Policies"]
    trail_grants = [s for s in policy["PolicyDocument"]["Statement"] if "cloudtrail:" in str(s["Action"])]
    assert trail_grants == [{"Effect": "Allow", "Action": TRAIL_READS, "Resource": trail["Resource"]}]


def test_an_alarm_fires_when_calls_stay_missing_files_unread_or_audited_calls_are_not_in_the_trail(
    merged: dict[str, Any],
) -> None:
    alarm = merged["Resources"]["ReconcileIncompleteAlarm"]["Properties"]
    watched = {
        query["MetricStat"]["Metric"]["MetricName"]: query["MetricStat"]["Metric"]
        for query in alarm["Metrics"]
        if "MetricStat" in query
    }
    assert set(watched) == {"MissingEvents", "UnreadableTrailFiles", "UnconfirmedEvents", "GoneRecords"}
    for metric in watched.values():  # what Powertools' Metrics(namespace="Deutzia", service=...) publishes
        assert metric["Namespace"] == "Deutzia"
        assert metric["Dimensions"] == [{"Name": "service", "Value": "deutzia-reconcile"}]
    (expression,) = [query for query in alarm["Metrics"] if query.get("ReturnData")]
    assert expression["Expression"] == "FILL(missing, 0) + FILL(unreadable, 0) + FILL(unconfirmed, 0) + FILL(gone, 0)"
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    errors = merged["Resources"]["ReconcileErrorsAlarm"]["Properties"]
    assert errors["Dimensions"][0]["Value"] == {"Ref": "ReconcileAuditTrail"}


def test_the_trail_table_is_awss_cloudtrail_table_projected_by_region_and_day(merged: dict[str, Any]) -> None:
    table = merged["Resources"]["TrailTable"]["Properties"]["TableInput"]
    storage = table["StorageDescriptor"]
    assert table["Name"] == "cloudtrail_logs"
    assert storage["InputFormat"] == "com.amazon.emr.cloudtrail.CloudTrailInputFormat"
    assert storage["SerdeInfo"]["SerializationLibrary"] == "org.apache.hive.hcatalog.data.JsonSerDe"
    assert [column["Name"] for column in table["PartitionKeys"]] == ["region", "date"]
    parameters = table["Parameters"]
    assert (parameters["projection.date.type"], parameters["projection.date.format"]) == ("date", "yyyy/MM/dd")
    assert parameters["storage.location.template"] == {
        "Fn::Sub": "s3://${TrailBucket}/AWSLogs/${AWS::AccountId}/CloudTrail/${!region}/${!date}"
    }
    columns = {column["Name"]: column["Type"] for column in storage["Columns"]}
    assert columns["resources"] == "array<struct<arn:string,accountid:string,type:string>>"
    assert {"eventid", "eventtime", "eventsource", "eventname", "eventcategory"} <= set(columns)


def test_the_bundle_every_function_shares_fits_lambdas_250_mb(package_dir: Path) -> None:
    with zipfile.ZipFile(package_dir / "package" / "deployment.zip") as bundle:
        unzipped = sum(entry.file_size for entry in bundle.infolist())
        packages = {entry.filename.split("/", 1)[0] for entry in bundle.infolist()}
    assert unzipped < 250 * 1000 * 1000, f"{unzipped:,} bytes unzipped"
    # The compiled wheels the ingest path imports, built for Lambda's Linux.
    assert {"orjson", "zlib_ng", "aws_lambda_powertools", "chalicelib"} <= packages
    assert unzipped > 100 * 1000 * 1000  # pyarrow, for compaction, is in it


def test_the_readme_says_what_each_alarm_means_as_the_alarm_itself_does(merged: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### When an alarm fires", 1)[1].split("\n#", 1)[0]
    rows = [line.split(" | ", 1) for line in section.splitlines() if line.startswith("| `")]
    documented = {name.strip("| `"): meaning.removesuffix(" |").replace("\\|", "|") for name, meaning in rows}
    alarms = _resources(merged, "AWS::CloudWatch::Alarm")
    assert documented == {name: alarm["Properties"]["AlarmDescription"] for name, alarm in alarms.items()}


def test_the_readme_documents_every_parameter_of_the_stack(merged: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Parameters", 1)[1].split("\n#", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {name.strip(" `") for row in rows for name in row.split(",")}  # a row may name two
    assert set(merged["Parameters"]) <= documented, set(merged["Parameters"]) - documented


def _reserved(translated: dict[str, Any], function: str) -> list[Any]:
    """The function's reserved concurrency with ReserveConcurrency true, then false (an account whose quota is still 10
    can reserve none)."""
    properties = translated["Resources"][function]["Properties"]
    return [
        Resolver(translated, {"AuditedTableNames": "Orders", "ReserveConcurrency": value})
        .resolve({"reserved": properties["ReservedConcurrentExecutions"]})
        .get("reserved")
        for value in ("true", "false")
    ]


def test_an_alarm_fires_when_compaction_meets_copies_that_contradict_each_other(
    merged: dict[str, Any],
) -> None:
    # The metric compact_audit_records publishes each run (tests/functional/test_compaction.py holds its name).
    alarm = merged["Resources"]["ContestedCopiesAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"], alarm["Dimensions"]) == (
        "Deutzia",
        "ContestedCopies",
        [{"Name": "service", "Value": "deutzia-compaction"}],
    )
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum",
        3600,
        0,
        "GreaterThanThreshold",
    )
    assert alarm["TreatMissingData"] == "notBreaching"
    assert "contested-" in alarm["AlarmDescription"]


def test_the_dashboard_shows_every_alarm_and_every_count_reconciliation_publishes(merged: dict[str, Any]) -> None:
    resolver = Resolver(merged, {"AuditedTableNames": "Orders"})
    body = json.loads(resolver.resolve(merged["Resources"]["Dashboard"]["Properties"]["DashboardBody"]))
    widgets = body["widgets"]
    (alarms,) = [widget["properties"]["alarms"] for widget in widgets if widget["type"] == "alarm"]
    assert sorted(alarms) == sorted(f"<{name}.Arn>" for name in _resources(merged, "AWS::CloudWatch::Alarm"))
    published = {
        metric[1]
        for widget in widgets
        if widget["type"] == "metric"
        for metric in widget["properties"]["metrics"]
        if metric[0] == "Deutzia" and metric[3] == "deutzia-reconcile"
    }
    assert published == {*DayReport("2024-05-01", "", "", "").totals(), "TrailProblems"}
    functions = {
        metric[3]
        for widget in widgets
        if widget["type"] == "metric"
        for metric in widget["properties"]["metrics"]
        if metric[:3] in (["AWS/Lambda", "Errors", "FunctionName"], ["AWS/Lambda", "Duration", "FunctionName"])
    }
    assert functions == {"<IngestAuditEvents>", "<APIHandler>", "<CompactAuditRecords>"}
    assert all(w["x"] >= 0 and w["x"] + w["width"] <= 24 for w in widgets)  # within the dashboard's 24 columns
    assert "Dashboard" in resolver.resolve(merged["Outputs"]["DashboardURL"]["Value"])
