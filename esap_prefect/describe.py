"""A workflow's parameters as a person reads them: names, types, choices, defaults.

From the flow's parameter schema (as Prefect's run form shows it) and the deployment's own
defaults, which win over the flow's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from prefect.utilities.callables import ParameterSchema

from core.units import format_duration, format_memory

_UNSET = object()


def _resolve(prop: Mapping[str, Any], definitions: Mapping[str, Any]) -> Mapping[str, Any]:
    if "$ref" in prop:
        found: Mapping[str, Any] = definitions.get(str(prop["$ref"]).rsplit("/", 1)[-1], prop)
        return found
    if len(prop.get("allOf", [])) == 1:
        return _resolve(prop["allOf"][0], definitions)
    return prop


_UNITS = {"10m": "duration (e.g. 10m, 9h30m)", "8G": "memory (e.g. 8G, 512M)"}


def kind(prop: Mapping[str, Any], definitions: Mapping[str, Any]) -> str:
    """`one of gamma|proton`, `list of string | object`, `duration (e.g. 10m)`, ..."""
    prop = _resolve(prop, definitions)
    if "enum" in prop:
        return "one of " + "|".join(str(v) for v in prop["enum"])
    if "anyOf" in prop:
        kinds = [kind(p, definitions) for p in prop["anyOf"] if p.get("type") != "null"]
        optional = any(p.get("type") == "null" for p in prop["anyOf"])
        return " | ".join(kinds) + (" (optional)" if optional else "")
    unit = next((_UNITS[e] for e in prop.get("examples") or [] if e in _UNITS), None)
    if unit:
        return unit
    if prop.get("type") == "array":
        return f"list of {kind(prop.get('items', {}), definitions)}"
    if prop.get("type") == "object":
        values = prop.get("additionalProperties")
        return f"map to {kind(values, definitions)}" if isinstance(values, dict) else "object"
    return str(prop.get("type", "any"))


def _shown(value: Any, prop: Mapping[str, Any]) -> str:
    examples = prop.get("examples") or []
    if isinstance(value, int) and "10m" in examples:
        return format_duration(value)
    if isinstance(value, int) and "8G" in examples:
        return format_memory(value)
    return json.dumps(value)


def parameter_lines(schema: ParameterSchema, deployed: Mapping[str, Any]) -> Iterator[str]:
    """One line per parameter: `name: type = default`, the deployment's default noted."""
    for name, prop in schema.properties.items():
        line = f"{name}: {kind(prop, schema.definitions)}"
        flow_default = prop.get("default", _UNSET)
        if name in deployed:
            line += f" = {_shown(deployed[name], prop)} (deployment"
            if flow_default is not _UNSET:
                line += f"; flow default {_shown(flow_default, prop)}"
            line += ")"
        elif flow_default is not _UNSET:
            line += f" = {_shown(flow_default, prop)}"
        else:
            line += "  (required)"
        yield line
