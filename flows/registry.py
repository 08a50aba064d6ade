"""The catalogue of ESAP workflows: name, entrypoint, deployment, description.

The command line, the deployments and (later) the gateway all read this one list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import Flow
from prefect.flows import load_flow_from_entrypoint

from flows.pipeline import PROJECT_ROOT


@dataclass(frozen=True)
class Workflow:
    """One ESAP workflow."""

    name: str
    entrypoint: str
    deployment: str
    description: str

    def load(self) -> Flow[..., Any]:
        """The Prefect flow object."""
        return load_flow_from_entrypoint(str(PROJECT_ROOT / self.entrypoint))


WORKFLOWS: dict[str, Workflow] = {
    w.name: w
    for w in (
        Workflow(
            name="hello-world",
            entrypoint="flows/hello_world.py:hello_world",
            deployment="hello-world/local",
            description="ESAP Hello World: echo six parameters as JSON with type batch.submit.",
        ),
        Workflow(
            name="cta-mc-production",
            entrypoint="flows/cta_mc_production.py:cta_mc_production",
            deployment="cta-mc-production/production",
            description="CTA Monte Carlo production (CTADIRAC MCPipeJob): one job per run, "
            "runs already archived are skipped.",
        ),
        Workflow(
            name="data-staging",
            entrypoint="flows/data_staging.py:data_staging",
            deployment="data-staging/default",
            description="Stage Rucio data and ESAP basket items to an RSE or next to a "
            "facility; report what is where with sizes and checksums.",
        ),
        Workflow(
            name="run-container",
            entrypoint="flows/run_container.py:run_container",
            deployment="run-container/default",
            description="Run one Docker or Singularity/Apptainer image as a job and archive "
            "its outputs and logs (the ExecutionBroker's container offers).",
        ),
    )
}


class UnknownWorkflowError(LookupError):
    """No workflow has the name asked for."""


def get_workflow(name: str) -> Workflow:
    """The workflow called `name`, or an error that lists the known ones."""
    try:
        return WORKFLOWS[name]
    except KeyError:
        known = ", ".join(sorted(WORKFLOWS))
        raise UnknownWorkflowError(f"unknown workflow {name!r}; known workflows: {known}") from None
