"""The `chalice deploy` path: a Chalice stage written from the infrastructure stack's outputs."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from chalice.config import Config
from chalice.deploy import models
from chalice.deploy.appgraph import ApplicationGraphBuilder, DependencyBuilder
from chalice.deploy.validate import validate_configuration

import app as deutzia_app
from infra.stage import CONFIG, REQUIRED_OUTPUTS, StackOutputsError, build_stage, stack_outputs, write_stage
from tests.infra.intrinsics import PSEUDO, Resolver

OUTPUTS = {
    "AuditBucketName": "audit-auditbucket-1",
    "AuditStreamName": "audit-AuditStream-1",
    "AuditedTables": "Orders,Users",
    "AuditReads": "true",
    "TrailLogGroupName": "/deutzia/audit/cloudtrail",
    "AthenaWorkGroupName": "audit",
    "GlueDatabaseName": "deutzia",
    "IngestFunctionRoleArn": "arn:aws:iam::123456789012:role/audit-ingest",
    "ApiFunctionRoleArn": "arn:aws:iam::123456789012:role/audit-api",
    "ReplayFunctionRoleArn": "arn:aws:iam::123456789012:role/audit-replay",
    "CompactionFunctionRoleArn": "arn:aws:iam::123456789012:role/audit-compact",
    "ReconcileFunctionRoleArn": "arn:aws:iam::123456789012:role/audit-reconcile",
    "TrailWatchFunctionRoleArn": "arn:aws:iam::123456789012:role/audit-trail-watch",
    "ReconcileWorkGroupName": "audit-reconcile",
    "TrailBucketName": "audit-trailbucket-1",
    "TrailPrefix": "AWSLogs/123456789012/CloudTrail/",
    "TrailArn": "arn:aws:cloudtrail:eu-west-1:123456789012:trail/audit-dynamodb",
    "IngestFailureQueueName": "audit-IngestFailureQueue-1",
}
# Each function's role; any function the app gains must get one here and in the stage.
FUNCTION_ROLES = {
    "api_handler": "ApiFunctionRoleArn",
    "ingest_audit_events": "IngestFunctionRoleArn",
    "replay_failed_batches": "ReplayFunctionRoleArn",
    "compact_audit_records": "CompactionFunctionRoleArn",
    "reconcile_audit_trail": "ReconcileFunctionRoleArn",
    "watch_trail": "TrailWatchFunctionRoleArn",
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
    assert api.environment_variables["TRAIL_ARN"] == OUTPUTS["TrailArn"]  # GET /audit/coverage says if it logs
    assert api.environment_variables["AUDITED_TABLES"] == "Orders,Users"
    replay = Config(chalice_stage="live", config_from_disk=written).scope("live", "replay_failed_batches")
    assert (replay.iam_role_arn, replay.lambda_timeout) == (OUTPUTS["ReplayFunctionRoleArn"], 900)
    assert replay.environment_variables["INGEST_FAILURE_QUEUE"] == OUTPUTS["IngestFailureQueueName"]


def test_a_stack_without_the_outputs_is_named_as_the_problem() -> None:
    with pytest.raises(StackOutputsError, match="IngestFunctionRoleArn"):
        build_stage({key: value for key, value in OUTPUTS.items() if key != "IngestFunctionRoleArn"})


def _deployed_functions(tmp_path: Path) -> dict[str, models.LambdaFunction]:
    """What `chalice deploy --stage live` builds from the project's config with the stage written into it, once
    Chalice's own validation passed: every function, by its name in the app."""
    config_path = tmp_path / "config.json"
    config_path.write_text(CONFIG.read_text())
    write_stage("live", build_stage(OUTPUTS), config_path)
    config = Config(
        chalice_stage="live",
        config_from_disk=json.loads(config_path.read_text()),
        user_provided_params={"chalice_app": deutzia_app.app, "project_dir": str(CONFIG.parents[1])},
        default_params={"api_gateway_stage": "api", "api_gateway_endpoint_type": "EDGE", "autogen_policy": False},
    )
    validate_configuration(config)
    application = ApplicationGraphBuilder().build(config, "live")
    return {
        model.resource_name: model
        for model in DependencyBuilder().build_dependencies(application)
        if isinstance(model, models.LambdaFunction)
    }


def test_chalice_deploy_accepts_the_stage_and_gives_every_function_its_own_role(tmp_path: Path) -> None:
    """Every function the app defines runs with its role, timeout and settings."""
    functions = _deployed_functions(tmp_path)
    assert set(functions) == set(FUNCTION_ROLES)
    for name, output in FUNCTION_ROLES.items():
        role = functions[name].role
        assert isinstance(role, models.PreCreatedIAMRole), name
        assert role.role_arn == OUTPUTS[output], name
    reconcile = functions["reconcile_audit_trail"]
    assert reconcile.environment_variables["ATHENA_WORKGROUP"] == "audit-reconcile"
    assert reconcile.environment_variables["TRAIL_BUCKET"] == OUTPUTS["TrailBucketName"]
    assert reconcile.environment_variables["TRAIL_PREFIX"] == OUTPUTS["TrailPrefix"]
    assert reconcile.environment_variables["TRAIL_ARN"] == OUTPUTS["TrailArn"]
    assert functions["api_handler"].environment_variables["ATHENA_WORKGROUP"] == "audit"
    assert (reconcile.timeout, functions["compact_audit_records"].timeout) == (900, 900)
    assert functions["compact_audit_records"].memory_size == 10240
    watch = functions["watch_trail"]
    assert (watch.environment_variables["TRAIL_ARN"], watch.timeout) == (OUTPUTS["TrailArn"], 60)


def test_the_stage_needs_every_output_the_template_gives_it(merged: dict[str, Any]) -> None:
    """The outputs the stage reads are the stack's own."""
    assert set(REQUIRED_OUTPUTS) <= set(merged["Outputs"])


def test_every_function_may_write_its_own_log_on_either_path(merged: dict[str, Any], tmp_path: Path) -> None:
    """Each function of the one stack writes to a log group the stack owns, kept FunctionLogRetentionDays, and
    `chalice deploy`'s to Lambda's own, /aws/lambda/deutzia-<stage>-<function>: its role covers both."""
    resolver = Resolver(merged, {"AuditedTableNames": "Orders"})
    region, account = PSEUDO["AWS::Region"], PSEUDO["AWS::AccountId"]

    def log_group_path(resource: str) -> str:
        return str(resolver.resolve(merged["Resources"][resource]["Properties"]["LogGroupName"]))

    def arn(pattern: str) -> str:  # `<Name.Arn>` of a log group as CloudFormation gives it
        if not pattern.startswith("<"):
            return pattern
        return f"arn:aws:logs:{region}:{account}:log-group:{log_group_path(pattern[1:].split('.')[0])}:*"

    chalice_names = {name: function.function_name for name, function in _deployed_functions(tmp_path).items()}
    by_role = {
        resource["Properties"]["Role"]["Fn::GetAtt"][0]: resource
        for resource in merged["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    for name, output in FUNCTION_ROLES.items():
        role = merged["Outputs"][output]["Value"]["Fn::GetAtt"][0]
        group = by_role[role]["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert merged["Resources"][group]["Properties"]["RetentionInDays"] == {"Ref": "FunctionLogRetentionDays"}
        (policy,) = merged["Resources"][role]["Properties"]["Policies"]
        (logs,) = [s for s in policy["PolicyDocument"]["Statement"] if "logs:PutLogEvents" in s["Action"]]
        resources = resolver.resolve(logs["Resource"])
        patterns = [arn(pattern) for pattern in ([resources] if isinstance(resources, str) else resources)]
        for path in (log_group_path(group), f"/aws/lambda/{chalice_names[name]}"):
            stream = f"arn:aws:logs:{region}:{account}:log-group:{path}:log-stream:2026/11/29/x"
            assert any(fnmatch.fnmatchcase(stream, pattern) for pattern in patterns), (name, path)
