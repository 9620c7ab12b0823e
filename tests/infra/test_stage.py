"""The `chalice deploy` path: a Chalice stage written from the infrastructure stack's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from chalice.config import Config

from infra.stage import StackOutputsError, build_stage, stack_outputs, write_stage

OUTPUTS = {
    "AuditBucketName": "audit-auditbucket-1",
    "AuditStreamName": "audit-AuditStream-1",
    "AuditedTables": "Orders,Users",
    "AthenaWorkGroupName": "audit",
    "GlueDatabaseName": "deutzia",
    "IngestFunctionRoleArn": "arn:aws:iam::123456789012:role/audit-ingest",
    "ApiFunctionRoleArn": "arn:aws:iam::123456789012:role/audit-api",
    "ReplayFunctionRoleArn": "arn:aws:iam::123456789012:role/audit-replay",
    "IngestFailureQueueName": "audit-IngestFailureQueue-1",
}


def test_stage_from_outputs_is_what_chalice_deploy_reads(tmp_path: Path) -> None:
    cloudformation = boto3.client("cloudformation")
    with Stubber(cloudformation) as stubber:
        stack = {
            "StackName": "audit",
            "CreationTime": "2024-05-01T00:00:00Z",
            "StackStatus": "CREATE_COMPLETE",
            "Outputs": [{"OutputKey": key, "OutputValue": value} for key, value in OUTPUTS.items()],
        }
        stubber.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "audit"})
        outputs = stack_outputs("audit", cloudformation)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"version": "2.0", "app_name": "deutzia", "stages": {"prod": {}}}))
    write_stage("live", build_stage(outputs), config_path)
    written = json.loads(config_path.read_text())
    assert set(written["stages"]) == {"prod", "live"}
    config = Config(chalice_stage="live", config_from_disk=written).scope("live", "ingest_audit_events")
    assert config.iam_role_arn == OUTPUTS["IngestFunctionRoleArn"]
    assert config.manage_iam_role is False
    assert config.environment_variables["AUDIT_STREAM"] == OUTPUTS["AuditStreamName"]
    assert config.environment_variables["REPORT_BATCH_ITEM_FAILURES"] == "false"
    api = Config(chalice_stage="live", config_from_disk=written).scope("live", "api_handler")
    assert (api.iam_role_arn, api.lambda_timeout) == (OUTPUTS["ApiFunctionRoleArn"], 29)
    assert api.environment_variables["AUDITED_TABLES"] == "Orders,Users"
    replay = Config(chalice_stage="live", config_from_disk=written).scope("live", "replay_failed_batches")
    assert (replay.iam_role_arn, replay.lambda_timeout) == (OUTPUTS["ReplayFunctionRoleArn"], 900)
    assert replay.environment_variables["INGEST_FAILURE_QUEUE"] == OUTPUTS["IngestFailureQueueName"]


def test_a_stack_without_the_outputs_is_named_as_the_problem() -> None:
    with pytest.raises(StackOutputsError, match="IngestFunctionRoleArn"):
        build_stage({key: value for key, value in OUTPUTS.items() if key != "IngestFunctionRoleArn"})
