"""Workflow parameters from the command line (`-p KEY=VALUE`, `--params-file`) and their checks.

Values that parse as a JSON list, object or number are taken as JSON, all else as strings.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ValidationError, create_model


class ParameterError(ValueError):
    """A parameter is missing, unknown or of the wrong type; the message names it."""


def parse_value(text: str) -> Any:
    """JSON for lists, objects and numbers; the text itself otherwise."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, list | dict | int | float) and not isinstance(value, bool):
        return value
    return text


def parse_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings to a dict."""
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ParameterError(f"-p {pair!r} is not KEY=VALUE")
        parameters[key.strip()] = parse_value(text)
    return parameters


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from a file; `what` names the file in errors ("parameter file")."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ParameterError(f"{what} {path} does not exist") from None
    except ValueError as exc:
        raise ParameterError(f"{what} {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ParameterError(f"{what} {path} must hold a JSON object")
    return data


def read_params_file(path: Path) -> dict[str, Any]:
    """A JSON object of parameters from a file."""
    return read_json_object(path, "parameter file")


def describe(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the field: 'resources.maxcores: ...'."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        got = f" (got {err['input']!r})" if "input" in err and err["type"] != "missing" else ""
        lines.append(f"{prefix}{where}: {err['msg']}{got}")
    return "; ".join(lines)


@functools.cache
def _parameter_model(fn: Callable[..., Any], workflow: str) -> type[BaseModel]:
    """A pydantic model of the function's parameters, built once per workflow."""
    hints = get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {
        name: (hints.get(name, Any), ... if p.default is p.empty else p.default)
        for name, p in inspect.signature(fn).parameters.items()
    }
    return create_model(f"{workflow}-parameters", **fields)


def validate_parameters(
    fn: Callable[..., Any], parameters: dict[str, Any], workflow: str, *, as_json: bool = False
) -> dict[str, Any]:
    """Check parameters against the workflow function's signature; the coerced values.

    `as_json` gives them in JSON form (durations as "10m"), as a deployment's schema wants.

    Raises:
        ParameterError: naming each unknown, missing or mistyped parameter and its value.
    """
    signature = inspect.signature(fn)
    accepted = list(signature.parameters)
    unknown = sorted(set(parameters) - set(accepted))
    if unknown:
        raise ParameterError(
            f"{workflow} has no parameter {', '.join(unknown)}; it takes: {', '.join(accepted)}"
        )
    model = _parameter_model(fn, workflow)
    try:
        checked = model.model_validate(parameters)
    except ValidationError as exc:
        raise ParameterError(f"invalid parameter for {workflow}: {describe(exc)}") from None
    if as_json:
        return checked.model_dump(mode="json", include=set(parameters))
    return {name: getattr(checked, name) for name in parameters}
