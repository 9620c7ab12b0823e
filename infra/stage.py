"""Writes a Chalice stage for the `chalice deploy` path from the infrastructure stack's outputs.

`make infra-deploy` creates the stack; this reads its outputs (DescribeStacks) and writes `.chalice/config.json`'s
`stages.<stage>`: the environment every function reads, the roles the stack made, and partial batch responses off
(the mapping `chalice deploy` creates does not honour them). Then `chalice deploy --stage <stage>` deploys the code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import boto3

CONFIG = Path(__file__).resolve().parents[1] / ".chalice" / "config.json"
REQUIRED_OUTPUTS = (
    "AuditBucketName",
    "AuditStreamName",
    "AuditedTables",
    "AuditReads",
    "TrailLogGroupName",
    "AthenaWorkGroupName",
    "GlueDatabaseName",
    "IngestFunctionRoleArn",
    "ApiFunctionRoleArn",
    "ReplayFunctionRoleArn",
    "CompactionFunctionRoleArn",
    "ReconcileFunctionRoleArn",
    "TrailWatchFunctionRoleArn",
    "ReconcileWorkGroupName",
    "TrailBucketName",
    "TrailPrefix",
    "TrailArn",
    "IngestFailureQueueName",
)


class StackOutputsError(Exception):
    """The stack lacks an output the stage needs."""


def build_stage(outputs: Mapping[str, str]) -> dict[str, Any]:
    """The Chalice stage for a stack with these outputs."""
    missing = [name for name in REQUIRED_OUTPUTS if name not in outputs]
    if missing:
        raise StackOutputsError(
            f"the stack has no output {', '.join(missing)}: was it made, or last updated, by this version's "
            "`make infra-deploy`?"
        )
    return {
        "api_gateway_stage": "api",
        "manage_iam_role": False,
        "environment_variables": {
            "AUDIT_BUCKET": outputs["AuditBucketName"],
            "AUDIT_PREFIX": "audit/",
            "AUDIT_STREAM": outputs["AuditStreamName"],
            "INGEST_FAILURE_QUEUE": outputs["IngestFailureQueueName"],
            "AUDITED_TABLES": outputs["AuditedTables"],
            "AUDIT_READS": outputs["AuditReads"],
            "TRAIL_BUCKET": outputs["TrailBucketName"],
            "TRAIL_LOG_GROUP": outputs["TrailLogGroupName"],
            "QUERY_BACKEND": "athena",
            "ATHENA_WORKGROUP": outputs["AthenaWorkGroupName"],
            "ATHENA_DATABASE": outputs["GlueDatabaseName"],
            "ATHENA_TABLE": "audit",
            "QUERY_TIMEOUT_SECONDS": "25",
            "REPORT_BATCH_ITEM_FAILURES": "false",
            "POWERTOOLS_SERVICE_NAME": "deutzia",
        },
        "lambda_functions": {
            "ingest_audit_events": {"iam_role_arn": outputs["IngestFunctionRoleArn"]},
            "api_handler": {
                "iam_role_arn": outputs["ApiFunctionRoleArn"],
                "lambda_timeout": 29,
                "environment_variables": {"TRAIL_ARN": outputs["TrailArn"]},
            },
            "replay_failed_batches": {"iam_role_arn": outputs["ReplayFunctionRoleArn"], "lambda_timeout": 900},
            "compact_audit_records": {"iam_role_arn": outputs["CompactionFunctionRoleArn"], "lambda_timeout": 900},
            "reconcile_audit_trail": {
                "iam_role_arn": outputs["ReconcileFunctionRoleArn"],
                "lambda_timeout": 900,
                "environment_variables": {
                    "ATHENA_WORKGROUP": outputs["ReconcileWorkGroupName"],
                    "TRAIL_PREFIX": outputs["TrailPrefix"],
                    "TRAIL_ARN": outputs["TrailArn"],
                },
            },
            "watch_trail": {
                "iam_role_arn": outputs["TrailWatchFunctionRoleArn"],
                "lambda_timeout": 60,
                "environment_variables": {"TRAIL_ARN": outputs["TrailArn"]},
            },
        },
    }


def stack_outputs(stack_name: str, cloudformation: Any = None) -> dict[str, str]:
    """The stack's outputs by name."""
    client = cloudformation or boto3.client("cloudformation")
    (stack,) = client.describe_stacks(StackName=stack_name)["Stacks"]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def write_stage(stage: str, settings: dict[str, Any], config_path: Path = CONFIG) -> None:
    """Set `stages.<stage>` in the Chalice config, keeping every other stage as it is."""
    config = json.loads(config_path.read_text())
    config.setdefault("stages", {})[stage] = settings
    config_path.write_text(json.dumps(config, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a Chalice stage from the infrastructure stack's outputs.")
    parser.add_argument("--stack", required=True, help="the stack `make infra-deploy` created")
    parser.add_argument("--stage", required=True, help="the Chalice stage to write, then `chalice deploy --stage`")
    arguments = parser.parse_args(argv)
    try:
        settings = build_stage(stack_outputs(arguments.stack))
    except StackOutputsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_stage(arguments.stage, settings)
    print(f"wrote stage {arguments.stage!r} to {CONFIG}; next: chalice deploy --stage {arguments.stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
