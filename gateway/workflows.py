"""Which workflow a UWS job runs, and its parameters checked against the workflow's model.

`workflow` (or ESAP's `type`) names it; every other parameter must be one of the flow's, or
one of the fields of ESAP's workflow files (`ESAP_FIELDS`): mapped where they mean something.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.params import (
    ParameterError,
    check_parameter,
    check_text,
    parse_value,
    validate_parameters,
)
from flows.registry import WORKFLOWS, Workflow

# ESAP's GUI posts its Hello World with type "batch.submit".
ALIASES = {"batch.submit": "hello-world"}
SELECTORS = ("workflow", "type")
RESERVED = ("phase", "runid")
MAX_FIELDS = 100

ESAP_MAPPED = {
    "cputime": "walltime",
    "singularity_image": "image",
    "dirac_se": "output_se",
    "dirac_path": "output_path",
}
"""ESAP workflow-file fields and the flow parameter each becomes, where the flow has it."""

ESAP_NAMES = ("job_name", "group_name")
"""ESAP workflow-file fields recorded with the flow run, as `job:` and `group:` tags."""

ESAP_KEPT = (
    "output_file_name",
    "arguement1",
    "arguement2",
    "arguement3",
    "argument1",
    "argument2",
    "argument3",
    "uuid",
    "title",
    "description",
)
"""ESAP workflow-file fields without a meaning here: kept and shown, no effect."""

ESAP_FIELDS = (*ESAP_MAPPED, *ESAP_NAMES, *ESAP_KEPT)


@dataclass(frozen=True)
class JobParameters:
    """A job's workflow and its checked flow parameters (JSON form, as Prefect takes them)."""

    workflow: Workflow
    parameters: dict[str, Any]


def check_fields(given: Mapping[str, str]) -> None:
    """ParameterError unless there are at most 100 fields, all of printable text.

    Everything a job keeps is shown again in XML and JSON documents, so nothing that
    cannot be written there is accepted.
    """
    if len(given) > MAX_FIELDS:
        raise ParameterError(f"more than {MAX_FIELDS} parameters ({len(given)})")
    for key, value in given.items():
        check_text(key, "a parameter name", 128)
        check_text(value, f"parameter {key}")


@functools.cache
def flow_function(name: str) -> Callable[..., Any]:
    """The Python function of a workflow's flow (its signature is the parameter model)."""
    return WORKFLOWS[name].load().fn


def find_workflow(name: str) -> Workflow:
    """A workflow by name (any case), deployment or ESAP alias; ParameterError listing the known."""
    key = ALIASES.get(name, name).lower()  # ESAP's catalogue says CONCORDIA
    for workflow in WORKFLOWS.values():
        if key in (workflow.name, workflow.deployment):
            return workflow
    raise ParameterError(
        f"parameter workflow: unknown workflow {name!r}; known: {', '.join(sorted(WORKFLOWS))}"
    )


def _mapped(fn: Callable[..., Any], esap: str, target: str, text: str) -> dict[str, Any]:
    """The flow parameters an ESAP field becomes, checked alone so errors name the field."""
    mapped: dict[str, Any] = {target: parse_value(text)}
    if target == "image" and "runtime" in inspect.signature(fn).parameters:
        mapped["runtime"] = "singularity"
    try:
        check_parameter(fn, target, mapped[target])
    except ParameterError as exc:
        raise ParameterError(f"parameter {esap} (the workflow's {target}): {exc}") from None
    return mapped


def job_parameters(given: Mapping[str, str]) -> JobParameters:
    """The workflow and its flow parameters from UWS parameters (names case-insensitive).

    ESAP's workflow-file fields map to the flow's parameters where it has them (a flow
    parameter given by its own name wins); the others are kept without effect.

    Raises:
        ParameterError: naming the missing selector, an unknown or a mistyped parameter.
    """
    check_fields(given)
    lowered = {k.lower(): (k, v) for k, v in given.items()}
    selector = next((lowered[s][1] for s in SELECTORS if s in lowered), None)
    if not selector:
        raise ParameterError(
            "parameter workflow (or ESAP's type) must name the workflow; known: "
            + ", ".join(sorted(WORKFLOWS))
        )
    workflow = find_workflow(selector)
    fn = flow_function(workflow.name)
    names = {n.lower(): n for n in inspect.signature(fn).parameters}
    parameters: dict[str, Any] = {}
    from_esap: dict[str, Any] = {}
    for low, (original, text) in lowered.items():
        if low in SELECTORS or low in RESERVED:
            continue
        if low in names:
            parameters[names[low]] = parse_value(text)
        elif ESAP_MAPPED.get(low) in names:
            from_esap.update(_mapped(fn, original, ESAP_MAPPED[low], text))
        elif low in ESAP_NAMES:
            check_text(text, f"parameter {original}", 128)
        elif low not in ESAP_FIELDS:
            parameters[original] = parse_value(text)
    parameters = {**from_esap, **parameters}
    checked = validate_parameters(fn, parameters, workflow.name, as_json=True)
    return JobParameters(workflow, checked)


def run_tags(given: Mapping[str, str]) -> list[str]:
    """Flow-run tags for ESAP's job and group names: `job:<job_name>`, `group:<group_name>`.

    Tags, not the run's name: each flow names its runs from its own parameters.
    """
    lowered = {k.lower(): v for k, v in given.items()}
    names = (("job", lowered.get("job_name")), ("group", lowered.get("group_name")))
    return [f"{kind}:{name}" for kind, name in names if name]
