"""Resolves the intrinsic functions the template uses, for given parameters, so tests can read the values AWS would.

Covers exactly what infra/template.yaml uses: Ref (parameters and pseudo parameters), Fn::If with its conditions,
Fn::Join, Fn::Split, Fn::Sub, Fn::Select, Fn::Base64. A reference to a resource stays as `<Name>` or `<Name.Attribute>`.
"""

from __future__ import annotations

import base64
import re
from typing import Any

PSEUDO = {
    "AWS::AccountId": "123456789012",
    "AWS::Region": "eu-west-1",
    "AWS::Partition": "aws",
    "AWS::StackName": "audit",
    "AWS::URLSuffix": "amazonaws.com",
}
NO_VALUE = object()


class Resolver:
    def __init__(self, template: dict[str, Any], parameters: dict[str, str]) -> None:
        self._template = template
        self._parameters: dict[str, Any] = {}
        for name, spec in template.get("Parameters", {}).items():
            value = parameters.get(name, str(spec.get("Default", "")))
            self._parameters[name] = value.split(",") if spec["Type"] == "CommaDelimitedList" else value

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self._template["Conditions"][name]))

    def resolve(self, node: Any) -> Any:
        if isinstance(node, list):
            return [value for value in (self.resolve(item) for item in node) if value is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, argument),) = node.items()
            if key == "Ref":
                if argument == "AWS::NoValue":
                    return NO_VALUE
                if argument in self._parameters:
                    return self._parameters[argument]
                return PSEUDO.get(argument, f"<{argument}>")
            if key == "Condition":
                return self.condition(argument)
            if key == "Fn::If":
                name, when_true, when_false = argument
                return self.resolve(when_true if self.condition(name) else when_false)
            if key == "Fn::Equals":
                left, right = self.resolve(argument)
                return left == right
            if key == "Fn::Not":
                return not self.resolve(argument)[0]
            if key == "Fn::And":
                return all(self.resolve(argument))
            if key == "Fn::Or":
                return any(self.resolve(argument))
            if key == "Fn::Join":
                delimiter, values = argument
                return delimiter.join(self.resolve(values))
            if key == "Fn::Split":
                delimiter, value = argument
                return self.resolve(value).split(delimiter)
            if key == "Fn::Select":
                index, values = argument
                return self.resolve(values)[int(index)]
            if key == "Fn::Base64":
                return base64.b64encode(str(self.resolve(argument)).encode()).decode()
            if key == "Fn::GetAtt":
                return "<" + ".".join(argument) + ">"
            if key == "Fn::Sub":
                text, variables = (argument, {}) if isinstance(argument, str) else argument
                values = {name: self.resolve(value) for name, value in variables.items()}
                return re.sub(r"\$\{([^}!]+)\}", lambda match: self._sub(match.group(1), values), text).replace(
                    "${!", "${"
                )
        resolved = {key: self.resolve(value) for key, value in node.items()}
        return {key: value for key, value in resolved.items() if value is not NO_VALUE}

    def _sub(self, name: str, values: dict[str, Any]) -> str:
        if name in values:
            return str(values[name])
        if name in self._parameters:
            return str(self._parameters[name])
        if name in PSEUDO:
            return PSEUDO[name]
        return f"<{name}>"
