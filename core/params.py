"""Workflow parameters from the command line (`-p KEY=VALUE`, `--params-file`) and their checks.

Values that parse as a JSON list, object or number are taken as JSON, all else as strings.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, TypeAdapter, ValidationError, create_model

MAX_TEXT = 65_536
MAX_INTEGER = 2**53
MAX_ITEMS = 10_000
MAX_DEPTH = 32
MAX_LISTED = 10
# what XML 1.0 cannot carry, and the C1 controls: refused in every text a user sends
_BAD_CHARACTER = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


class ParameterError(ValueError):
    """A parameter is missing, unknown or of the wrong type; the message names it."""


def check_text(text: str, where: str, limit: int = MAX_TEXT) -> str:
    """`text` if it is printable text of at most `limit` characters; ParameterError naming `where`.

    Control characters (but tab and newlines), lone surrogates and non-characters are
    refused: they break XML documents, logs and terminals downstream.
    """
    if len(text) > limit:
        raise ParameterError(f"{where}: longer than {limit} characters")
    bad = _BAD_CHARACTER.search(text)
    if bad:
        raise ParameterError(
            f"{where}: holds the control character U+{ord(bad.group()):04X}, which is not allowed"
        )
    return text


def printable(text: str) -> str:
    """`text` with every character `check_text` refuses replaced by U+FFFD."""
    return _BAD_CHARACTER.sub("\ufffd", text)


def check_value(value: Any, where: str, depth: int = 0) -> Any:
    """A parameter value checked all through: printable text, finite numbers of a sane size.

    Integers beyond 2**53 (not exact in JSON), NaN and infinities, nesting deeper than 32 and
    lists or objects of more than 10,000 items are refused, naming `where`.
    """
    if depth > MAX_DEPTH:
        raise ParameterError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if abs(value) > MAX_INTEGER:
            raise ParameterError(f"{where}: {str(value)[:20]}... is beyond +-2**53")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ParameterError(f"{where}: {value} is not a finite number")
    elif isinstance(value, list | tuple | dict):
        if len(value) > MAX_ITEMS:
            raise ParameterError(f"{where}: more than {MAX_ITEMS} items")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(key, str):
                check_text(key, f"{where}: a key", 256)
            check_value(item, f"{where}[{key!r:.40}]", depth + 1)
    return value


def listed(names: Iterable[str], limit: int = MAX_LISTED) -> str:
    """Names joined by commas, at most `limit` of them, then how many more."""
    items = list(names)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


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
        shown = repr(err["input"]) if "input" in err else ""
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        got = f" (got {shown})" if shown and err["type"] != "missing" else ""
        message = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"{prefix}{where}: {message}{got}")
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


def check_parameter(fn: Callable[..., Any], name: str, value: Any) -> Any:
    """One parameter of `fn` checked alone against its annotation; the coerced value.

    Raises:
        ParameterError: saying what is wrong with the value (the caller names the field).
    """
    check_value(value, f"parameter {name}")
    hints = get_type_hints(fn, include_extras=True)
    try:
        return TypeAdapter(hints.get(name, Any)).validate_python(value)
    except ValidationError as exc:
        raise ParameterError(describe(exc).removeprefix("(root): ")) from None


F = TypeVar("F", bound=Callable[..., Any])
CROSS_CHECK = "__esap_cross_check__"


def cross_checked(check: Callable[[dict[str, Any]], None]) -> Callable[[F], F]:
    """Attach a check of the parameters together (ranges, options that go with others).

    `validate_parameters` runs it on all values, defaults included, after each was checked
    alone; its ValueError becomes the ParameterError the caller answers with (400, exit 2).
    """

    def attach(fn: F) -> F:
        setattr(fn, CROSS_CHECK, check)
        return fn

    return attach


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
    for name in parameters:
        check_text(name, "a parameter name", 128)
    unknown = sorted(set(parameters) - set(accepted))
    if unknown:
        raise ParameterError(
            f"{workflow} has no parameter {listed(unknown)}; it takes: {', '.join(accepted)}"
        )
    for name, value in parameters.items():
        check_value(value, f"parameter {name}")
    model = _parameter_model(fn, workflow)
    try:
        checked = model.model_validate(parameters)
    except ValidationError as exc:
        raise ParameterError(f"invalid parameter for {workflow}: {describe(exc)}") from None
    cross_check = getattr(fn, CROSS_CHECK, None)
    if cross_check is not None:
        try:
            cross_check({name: getattr(checked, name) for name in accepted})
        except ValueError as exc:
            raise ParameterError(f"invalid parameters for {workflow}: {exc}") from None
    if as_json:
        return checked.model_dump(mode="json", include=set(parameters))
    return {name: getattr(checked, name) for name in parameters}
