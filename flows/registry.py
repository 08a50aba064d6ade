"""The catalogue of ESAP workflows: each one's flow, deployment, schedule and description.

The one list the command line, the gateway and the deployments read; prefect.yaml is
generated from it (`python -m deployments.prefect_yaml`). Flows load by module path.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect import Flow

LOCAL_POOL = "local"
DIRAC_POOL = "dirac"
APPTAINER_POOL = "apptainer"
DOCKER_POOL = "docker"
KUBERNETES_POOL = "kubernetes"
REMOTE_POOLS = (DIRAC_POOL, APPTAINER_POOL, DOCKER_POOL, KUBERNETES_POOL)


@dataclass(frozen=True)
class Workflow:
    """One ESAP workflow and its deployment; `entrypoint` is a module path (`module:flow`)."""

    name: str
    entrypoint: str
    deployment_name: str
    description: str
    tags: tuple[str, ...]
    deployment_notes: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    cron: str | None = None
    work_pool: str = LOCAL_POOL
    other_pools: tuple[str, ...] = ()
    """Pools the workflow is also deployed on, each as a deployment named after its pool."""

    def placements(self) -> list[tuple[str, str]]:
        """(deployment name, work pool) of each deployment of the workflow, the main first."""
        return [(self.deployment_name, self.work_pool), *((p, p) for p in self.other_pools)]

    @property
    def deployment(self) -> str:
        """The deployment's full name, `<flow>/<deployment>`."""
        return f"{self.name}/{self.deployment_name}"

    @property
    def file_entrypoint(self) -> str:
        """The entrypoint as a file path, as `prefect deploy` from a clone takes it."""
        module, _, attribute = self.entrypoint.partition(":")
        return f"{module.replace('.', '/')}.py:{attribute}"

    def load(self) -> Flow[..., Any]:
        """The Prefect flow object (its module imported)."""
        module, _, attribute = self.entrypoint.partition(":")
        flow: Flow[..., Any] = getattr(importlib.import_module(module), attribute)
        return flow


WORKFLOWS: dict[str, Workflow] = {
    w.name: w
    for w in (
        Workflow(
            name="hello-world",
            entrypoint="flows.hello_world:hello_world",
            deployment_name="local",
            description="ESAP Hello World: echo six parameters as JSON with type batch.submit.",
            tags=("esap", "hello-world"),
            other_pools=REMOTE_POOLS,
        ),
        Workflow(
            name="cta-mc-production",
            entrypoint="flows.cta_mc_production:cta_mc_production",
            deployment_name="production",
            description="CTA Monte Carlo production (CTADIRAC MCPipeJob): one job per run, "
            "runs already archived are skipped.",
            tags=("esap", "cta", "production"),
            deployment_notes="The nightly schedule is off by default: turn it on in the Prefect "
            "UI (Deployments -> production -> Schedules) or with `prefect deployment schedule "
            "resume`, after setting the production parameters.",
            parameters={"runs": 100, "showers_per_run": 1000, "max_reschedules": 2},
            cron="0 2 * * *",
        ),
        Workflow(
            name="data-staging",
            entrypoint="flows.data_staging:data_staging",
            deployment_name="default",
            description="Stage Rucio data and ESAP basket items to an RSE or next to a "
            "facility; report what is where with sizes and checksums.",
            tags=("esap", "data", "rucio"),
            deployment_notes="Uses the saved Rucio store, or the rucio client configuration "
            "that RUCIO_CONFIG names.",
        ),
        Workflow(
            name="concordia",
            entrypoint="flows.concordia:concordia",
            deployment_name="default",
            description="CONCORDIA: containerised CORSIKA air-shower simulation; the image of "
            "the build configuration is selected if built, built otherwise (Docker, "
            "Apptainer), or listed (DIRAC).",
            tags=("esap", "concordia", "corsika"),
            deployment_notes="Builds need the licensed CORSIKA source: save a CORSIKA Source "
            "block named default (its tarball path). DIRAC runs images its facility lists.",
        ),
        Workflow(
            name="run-container",
            entrypoint="flows.run_container:run_container",
            deployment_name="default",
            description="Run one Docker or Singularity/Apptainer image as a job and archive "
            "its outputs and logs (the ExecutionBroker's container offers).",
            tags=("esap", "container"),
            deployment_notes="Needs a Docker or Apptainer facility "
            "(`esap-prefect facilities add docker|apptainer`).",
            other_pools=REMOTE_POOLS,
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
