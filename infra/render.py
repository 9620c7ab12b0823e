"""Renders infra/template.yaml into the CloudFormation JSON that `make package` and the `chalice deploy` path use.

Two outputs from one template: the merge template for `chalice package --merge-template` (everything), and the
standalone infrastructure stack for the `chalice deploy` path (without the overrides of Chalice's resources, and
without what refers to them). The Glue tables' columns and the `audit` view's definition are written in the template
itself (so `chalice package --merge-template infra/template.yaml` gives the same stack) and must equal what
chalicelib/schema.py and chalicelib/query.py define: rendering refuses a template that drifted, and `--columns`
rewrites them. Runs offline; no AWS call.
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

from chalicelib.query import VIEW_COLUMNS, Relations, build_view_sql
from chalicelib.schema import AUDIT_COLUMNS, PARTITION_COLUMNS, TRAIL_COLUMNS

TEMPLATE = Path(__file__).with_name("template.yaml")
_SUB_REFERENCE = re.compile(r"\$\{([A-Za-z0-9]+)(?:\.[A-Za-z0-9.]+)?\}")
_COLUMNS_BLOCK = re.compile(r"^(?P<indent> +)Columns:\n(?:(?P=indent)  - \{Name: [^\n]*\}\n)+", re.MULTILINE)
_VIEW_LINE = re.compile(r"^(?P<indent> +)- Fn::Base64: !Sub '[^\n]*'\n", re.MULTILINE)
_RESOURCE_LINE = re.compile(r"^  (?P<name>[A-Za-z0-9]+):\n", re.MULTILINE)
# The Glue tables whose columns come from the code, and the view.
FRESH_TABLE, COMPACTED_TABLE, VIEW, TRAIL_TABLE = "AuditTable", "AuditCompactedTable", "AuditView", "TrailTable"
_PRESTO_TYPES = {"string": "varchar", "int": "integer", "boolean": "boolean", "array<string>": "array(varchar)"}


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
    """The merge template, once its Glue columns and view are checked to be the code's."""
    resources = template.get("Resources", {})
    for name, columns in generated_columns().items():
        try:
            storage = resources[name]["Properties"]["TableInput"]["StorageDescriptor"]
        except KeyError as exc:
            raise TemplateError(f"the {name} resource has no StorageDescriptor: missing {exc}") from None
        if storage.get("Columns") != columns:
            raise TemplateError(
                f"the {name} columns in infra/template.yaml differ from chalicelib/schema.py: "
                "run `.venv/bin/python -m infra.render --columns` to write them"
            )
    try:
        parts = resources[VIEW]["Properties"]["TableInput"]["ViewOriginalText"]["Fn::Join"][1]
        definition = parts[1]["Fn::Base64"]["Fn::Sub"]
    except (KeyError, IndexError, TypeError) as exc:
        raise TemplateError(f"the {VIEW} resource has no Fn::Base64 view definition: {exc}") from None
    if definition != view_definition():
        raise TemplateError(
            f"the {VIEW} definition in infra/template.yaml differs from chalicelib/query.py: "
            "run `.venv/bin/python -m infra.render --columns` to write it"
        )
    return copy.deepcopy(template)


def schema_columns() -> list[dict[str, str]]:
    """The Glue columns of the record schema."""
    return [{"Name": column.name, "Type": column.glue_type} for column in AUDIT_COLUMNS]


def generated_columns() -> dict[str, list[dict[str, str]]]:
    """Each Glue table's columns: the fresh tier's lines, the compacted tier's files (with `dt`), the view's, and
    the raw trail's (AWS's CloudTrail table)."""
    dt = {"Name": "dt", "Type": "string"}
    partitions = [{"Name": column.name, "Type": column.glue_type} for column in PARTITION_COLUMNS]
    types = {column["Name"]: column["Type"] for column in schema_columns() + partitions}
    return {
        FRESH_TABLE: schema_columns(),
        COMPACTED_TABLE: [*schema_columns(), dt],
        VIEW: [{"Name": name, "Type": types[name]} for name in VIEW_COLUMNS],
        TRAIL_TABLE: [{"Name": column.name, "Type": column.glue_type} for column in TRAIL_COLUMNS],
    }


def view_definition() -> str:
    """The Athena (Presto) view `audit` as Athena stores it, before base64: its SQL over the two tiers, resolved in
    the stack's database (`${GlueDatabase}`, for Fn::Sub)."""
    document = {
        "originalSql": build_view_sql(Relations("audit_compacted", "audit_fresh")),
        "catalog": "awsdatacatalog",
        "schema": "${GlueDatabase}",
        "columns": [{"name": c["Name"], "type": _PRESTO_TYPES[c["Type"]]} for c in generated_columns()[VIEW]],
    }
    return json.dumps(document, separators=(",", ":"))


def write_columns(path: Path = TEMPLATE) -> bool:
    """Rewrite the template's `Columns:` lists and the view's definition from the code; True when it changed."""
    text = path.read_text()
    columns = generated_columns()
    pieces: list[str] = []
    position = 0
    matches = list(_COLUMNS_BLOCK.finditer(text))
    if not matches or _VIEW_LINE.search(text) is None:
        raise TemplateError(f"{path}: no `Columns:` list of `- {{Name: ..., Type: ...}}` entries, or no view line")
    for match in matches:
        resources = [line["name"] for line in _RESOURCE_LINE.finditer(text, 0, match.start())]
        if not resources or resources[-1] not in columns:
            continue
        indent = match.group("indent")
        entries = "".join(
            f"{indent}  - {{Name: {c['Name']}, Type: {json.dumps(c['Type'])}}}\n" for c in columns[resources[-1]]
        )
        pieces += [text[position : match.start()], f"{indent}Columns:\n{entries}"]
        position = match.end()
    updated = "".join([*pieces, text[position:]])
    view = _VIEW_LINE.search(updated)
    assert view is not None
    line = f"{view.group('indent')}- Fn::Base64: !Sub '{view_definition().replace(chr(39), chr(39) * 2)}'\n"
    updated = updated[: view.start()] + line + updated[view.end() :]
    if updated != text:
        path.write_text(updated)
    return updated != text


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
    parser.add_argument("out", type=Path, nargs="?", help="folder for merge-template.json and infrastructure.json")
    parser.add_argument("--columns", action="store_true", help="write the record schema's columns into the template")
    arguments = parser.parse_args(argv)
    if arguments.columns:
        print(f"{TEMPLATE}: {'columns written' if write_columns() else 'columns already match'}")
        return 0
    if arguments.out is None:
        parser.error("give a folder to render into, or --columns")
    try:
        template = load_template()
        rendered_templates = (
            ("merge-template.json", render_merge_template(template)),
            ("infrastructure.json", render_infrastructure(template)),
        )
    except TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    arguments.out.mkdir(parents=True, exist_ok=True)
    for name, rendered in rendered_templates:
        (arguments.out / name).write_text(json.dumps(rendered, indent=2) + "\n")
        print(f"wrote {arguments.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
