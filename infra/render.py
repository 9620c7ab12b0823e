"""Renders infra/template.yaml into the CloudFormation JSON that `make package` and the `chalice deploy` path use.

Two outputs from one template: the merge template for `chalice package --merge-template` (everything), and the
standalone infrastructure stack for the `chalice deploy` path (without the overrides of Chalice's resources, and
without what refers to them). The Glue table's columns come from chalicelib/schema.py, the code's own list, so
the catalog and the records cannot drift apart. Runs offline; no AWS call.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cfnlint.decode import decode_str

from chalicelib.schema import AUDIT_COLUMNS

TEMPLATE = Path(__file__).with_name("template.yaml")
_SUB_REFERENCE = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z0-9.]+)?\}")


class TemplateError(Exception):
    """infra/template.yaml cannot be read or lacks what the renderer fills in."""


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """The YAML template as plain data: short-form intrinsics in long form, anchors expanded."""
    template, problems = decode_str(path.read_text())
    if problems or template is None:
        raise TemplateError(f"{path}: {'; '.join(str(problem) for problem in problems)}")
    plain: dict[str, Any] = json.loads(json.dumps(template))
    return plain


def render_merge_template(template: dict[str, Any]) -> dict[str, Any]:
    """The merge template: the source with the Glue table's columns filled from the record schema."""
    rendered = copy.deepcopy(template)
    try:
        storage = rendered["Resources"]["AuditTable"]["Properties"]["TableInput"]["StorageDescriptor"]
    except KeyError as exc:
        raise TemplateError(f"the AuditTable resource has no StorageDescriptor: missing {exc}") from None
    storage["Columns"] = [{"Name": column.name, "Type": column.glue_type} for column in AUDIT_COLUMNS]
    return rendered


def render_infrastructure(template: dict[str, Any]) -> dict[str, Any]:
    """The stack for the `chalice deploy` path: no Chalice resources, nor anything that refers to them."""
    rendered = render_merge_template(template)
    return without_resources(rendered, {name for name, body in rendered["Resources"].items() if "Type" not in body})


def without_resources(template: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """The template less the named resources and, transitively, every resource and output that refers to them."""
    resources: dict[str, Any] = template["Resources"]
    missing = set(names)
    while True:
        dropped = {name for name, body in resources.items() if name not in missing and _refers_to(body, missing)}
        if not dropped:
            break
        missing |= dropped
    pruned = dict(template)
    pruned["Resources"] = {name: body for name, body in resources.items() if name not in missing}
    outputs = template.get("Outputs", {})
    pruned["Outputs"] = {name: body for name, body in outputs.items() if not _refers_to(body, missing)}
    return pruned


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Ref" and isinstance(value, str):
                yield value
            elif key == "Fn::GetAtt":
                yield value[0] if isinstance(value, list) else str(value).split(".")[0]
            elif key == "Fn::Sub":
                text = value[0] if isinstance(value, list) else value
                if isinstance(text, str):
                    yield from _SUB_REFERENCE.findall(text)
            if key == "DependsOn":
                yield from [value] if isinstance(value, str) else value
            yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _refers_to(node: Any, names: set[str]) -> bool:
    return any(reference in names for reference in _references(node))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="folder for merge-template.json and infrastructure.json")
    arguments = parser.parse_args(argv)
    template = load_template()
    arguments.out.mkdir(parents=True, exist_ok=True)
    for name, rendered in (
        ("merge-template.json", render_merge_template(template)),
        ("infrastructure.json", render_infrastructure(template)),
    ):
        (arguments.out / name).write_text(json.dumps(rendered, indent=2) + "\n")
        print(f"wrote {arguments.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
