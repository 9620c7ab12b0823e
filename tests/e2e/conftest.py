"""The local stack as a user runs it: `python -m deutzia_local up` on free loopback ports, with the poller as its own
process (`python -m deutzia_local poll`) so a test can kill and restart it. Stopped by the fixtures."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from deutzia_local.child import StackProcess, create_keyed_table, free_port

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 60.0


def settled_today(settle_seconds: float = 10.0) -> str:
    """Today (UTC), once it began more than `settle_seconds` ago (DEUTZIA_RECONCILE_SETTLE_SECONDS): a reconciliation
    of today refuses it before that, so a test that reconciles today waits out the first seconds after midnight."""
    now = datetime.now(UTC)
    begun = (now - datetime.combine(now.date(), datetime.min.time(), UTC)).total_seconds()
    if begun <= settle_seconds + 1:
        time.sleep(settle_seconds + 1 - begun)
    return datetime.now(UTC).date().isoformat()


class Stack:
    """Endpoints of the running stack, clients on them, and control of its poller."""

    def __init__(self, aws_port: int, api_port: int, env: dict[str, str]) -> None:
        self.aws_endpoint = f"http://127.0.0.1:{aws_port}"
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.env = env
        self.up = StackProcess(["up", "--no-poller"], env)
        self.poller: StackProcess | None = None

    def start_poller(self) -> None:
        self.poller = StackProcess(["poll"], self.env)
        self.poller.wait_for_line("polling")

    def client(self, service: str, keys: dict[str, str] | None = None, region: str = "us-east-1") -> Any:
        credentials = keys or {"AccessKeyId": "deutzia-e2e-admin", "SecretAccessKey": "x"}
        return boto3.session.Session(
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            region_name=region,
        ).client(service, endpoint_url=self.aws_endpoint)  # type: ignore[call-overload]

    def create_table(self, name: str) -> None:
        """A table keyed by the string `id`, as the tests' calls expect."""
        create_keyed_table(self.client("dynamodb"), name)

    def user(self, name: str) -> dict[str, str]:
        iam = self.client("iam")
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}

    def aws_cli(self, keys: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
        """The AWS CLI from the virtualenv, as the demo prints it (`python -m awscli`: the `aws` script's `#!` line
        breaks where the clone's path holds a space)."""
        env = {**self.env, "AWS_ACCESS_KEY_ID": keys["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": keys["SecretAccessKey"]}
        command = [
            sys.executable,
            "-m",
            "awscli",
            "--endpoint-url",
            self.aws_endpoint,
            "--region",
            "us-east-1",
        ]
        return self.run([*command, *arguments], env=env)

    def deutzia_local(self, *arguments: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """`python -m deutzia_local ...` against this stack, as `make demo` and `make compact` run it."""
        return self.run([sys.executable, "-m", "deutzia_local", *arguments], timeout=timeout)

    def sql_rows(self, query: str) -> list[dict[str, str]]:
        """The rows of `deutzia sql` on this stack (as `make sql` runs it), read from its CSV."""
        result = self.run([str(Path(sys.executable).parent / "deutzia"), "sql", query, "--format", "csv"])
        assert result.returncode == 0, result.stderr
        return list(csv.DictReader(io.StringIO(result.stdout)))

    def run(
        self, command: list[str] | str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """A command from the project's folder with the stack's environment; a string runs in a shell, as pasted."""
        return subprocess.run(
            command,
            shell=isinstance(command, str),
            cwd=ROOT,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def s3_outage(self, bucket: str, seconds: float, code: str = "AccessDenied") -> None:
        """Refuse every write to `bucket` for `seconds`, as S3 does in an outage."""
        body = json.dumps({"bucket": bucket, "seconds": seconds, "code": code}).encode()
        request = urllib.request.Request(f"{self.aws_endpoint}/_deutzia/faults/s3", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def end_s3_outage(self) -> None:
        request = urllib.request.Request(f"{self.aws_endpoint}/_deutzia/faults/s3", method="DELETE")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def audit(self, **parameters: str) -> dict[str, Any]:
        query = urllib.parse.urlencode({"limit": "1000", **parameters})
        with urllib.request.urlopen(f"{self.api_url}/audit?{query}", timeout=30) as response:
            body: dict[str, Any] = json.loads(response.read())
        return body

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool], **parameters: str) -> list[dict[str, Any]]:
        """The entries of GET /audit once `done(entries)` holds."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            entries: list[dict[str, Any]] = self.audit(**parameters)["entries"]
            if done(entries):
                return entries
            if time.monotonic() > deadline:
                raise AssertionError(f"GET /audit {parameters} never got there; last entries: {entries}")
            time.sleep(0.2)


@contextlib.contextmanager
def running_stack(**settings: str) -> Iterator[Stack]:
    """A stack of its own on free ports, with `settings` (DEUTZIA_* variables) on top of the tests' own."""
    aws_port, api_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(
        DEUTZIA_AWS_PORT=str(aws_port),
        DEUTZIA_API_PORT=str(api_port),
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        DEUTZIA_FIRST_RETRY_SECONDS="0.02",  # the poller's ten retries span ~6 s instead of ~5 minutes
        # Reconciliation runs when a test says so (`make reconcile`): on its own it would backfill what a test
        # holds back from the fast path on purpose (a killed poller, an S3 outage).
        DEUTZIA_RECONCILE_INTERVAL="86400",
    )
    env.update(settings)
    running = Stack(aws_port, api_port, env)
    try:
        ready = running.up.wait_for_line("ready")
        assert running.aws_endpoint in ready
        assert running.api_url in ready
        running.start_poller()
        yield running
    finally:
        if running.poller is not None:
            running.poller.stop()
        assert running.up.stop() == 0, "the stack did not stop by itself on SIGTERM"


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with running_stack() as running:
        yield running
