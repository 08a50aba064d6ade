"""Which workflow a UWS job runs, and its parameters checked against the workflow's model.

`workflow` (or ESAP's `type`) names it; every other parameter must be one of the flow's.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from core.params import ParameterError, check_text, parse_value, validate_parameters
from flows.registry import WORKFLOWS, Workflow

# ESAP's GUI posts its Hello World with type "batch.submit".
ALIASES = {"batch.submit": "hello-world"}
SELECTORS = ("workflow", "type")
RESERVED = ("phase", "runid")
MAX_FIELDS = 100


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
def _flow_fn(name: str) -> Callable[..., Any]:
    return WORKFLOWS[name].load().fn


def find_workflow(name: str) -> Workflow:
    """A workflow by name, deployment name or ESAP alias; ParameterError listing the known."""
    key = ALIASES.get(name, name)
    for workflow in WORKFLOWS.values():
        if key in (workflow.name, workflow.deployment):
            return workflow
    raise ParameterError(
        f"parameter workflow: unknown workflow {name!r}; known: {', '.join(sorted(WORKFLOWS))}"
    )


def job_parameters(given: Mapping[str, str]) -> tuple[Workflow, dict[str, Any]]:
    """The workflow and its flow parameters from UWS parameters (names case-insensitive).

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
    fn = _flow_fn(workflow.name)
    names = {n.lower(): n for n in inspect.signature(fn).parameters}
    parameters: dict[str, Any] = {}
    for low, (original, text) in lowered.items():
        if low in SELECTORS or low in RESERVED:
            continue
        parameters[names.get(low, original)] = parse_value(text)
    return workflow, validate_parameters(fn, parameters, workflow.name, as_json=True)
