"""The packaged template, made once per run the way a user makes it: `make package` (render + chalice package)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from samtranslator.translator.transform import transform

ROOT = Path(__file__).resolve().parents[2]


class _NoManagedPolicies:
    """The template names no AWS managed policy, so the translator never needs IAM's list of them."""

    def load(self) -> dict[str, str]:
        return {}


def run_command(command: list[str], env: dict[str, str]) -> None:
    """A command from the project's folder, which must succeed; its output is the failure message."""
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def _make(*arguments: str, env: dict[str, str]) -> None:
    run_command(["make", "--no-print-directory", *arguments], env)


@pytest.fixture(scope="session")
def package_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make package` with no credentials and every connection refused (the Lambda's wheels are fetched first)."""
    _make("wheelhouse", env=os.environ.copy())
    offline = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    dead = "http://127.0.0.1:9"
    offline.update(http_proxy=dead, https_proxy=dead, HTTP_PROXY=dead, HTTPS_PROXY=dead, no_proxy="", NO_PROXY="")
    out = tmp_path_factory.mktemp("out")
    _make("package", f"OUT={out}", env=offline)
    return out


@pytest.fixture(scope="session")
def merged(package_dir: Path) -> dict[str, Any]:
    """Chalice's SAM template merged with infra/template.yaml."""
    template: dict[str, Any] = json.loads((package_dir / "package" / "sam.json").read_text())
    return template


@pytest.fixture(scope="session")
def translated(merged: dict[str, Any]) -> dict[str, Any]:
    """The merged template as plain CloudFormation, translated by the library behind the SAM transform."""
    template = copy.deepcopy(merged)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            # What `aws cloudformation package` does before CloudFormation sees the template.
            resource["Properties"]["CodeUri"] = "s3://deutzia-artifacts/deployment.zip"
    parameters = {"AWS::Region": "eu-west-1", "AWS::AccountId": "123456789012", "AWS::Partition": "aws"}
    return transform(template, parameters, _NoManagedPolicies())  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def infrastructure(package_dir: Path) -> dict[str, Any]:
    """The standalone stack of the `chalice deploy` path."""
    template: dict[str, Any] = json.loads((package_dir / "templates" / "infrastructure.json").read_text())
    return template
