"""Prepare a Prefect server for esap-prefect: block types, default blocks, work pool, deployments.

Every step is idempotent: running it against a prepared server changes nothing.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import Any, cast

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType
from prefect.utilities.callables import ParameterSchema
from prefect_docker.worker import DockerWorker

from blocks.apptainer import ApptainerFacility
from blocks.archive import LocalArchive
from blocks.catalogue import FACILITY_TYPES, STORE_TYPES
from blocks.facility import FacilityBlock
from blocks.local import LocalFacility
from blocks.registry import DEFAULT_NAME, block_names, list_facilities
from core.settings import home
from deployments import runtime_image
from deployments.crash_detection import ensure_crash_detection
from flows.registry import (
    APPTAINER_POOL,
    DIRAC_POOL,
    DOCKER_POOL,
    KUBERNETES_POOL,
    LOCAL_POOL,
    WORKFLOWS,
)
from workers import KUBERNETES_TYPE
from workers.apptainer import ApptainerWorker
from workers.dirac import DiracWorker
from workers.warm import WarmWorker


class BootstrapError(RuntimeError):
    """The server could not be prepared; the message says which step and why."""


def register_block_types() -> None:
    """Make every facility and store type known to the server (and its UI)."""
    for cls in (*FACILITY_TYPES, *STORE_TYPES):
        cls.register_type_and_schema()


def ensure_default_blocks() -> None:
    """Save the embedded defaults as 'local' unless blocks of that name exist."""
    for cls in (LocalFacility, LocalArchive):
        try:
            cls.load(DEFAULT_NAME)
        except ValueError:
            cls().save(DEFAULT_NAME)


@dataclass(frozen=True)
class Pool:
    """A work pool `up` keeps: its type, template defaults we own, what its description says."""

    name: str
    type: str
    template: dict[str, Any]
    description: str
    owned_defaults: dict[str, Any] = field(default_factory=dict)


def ensure_work_pools() -> None:
    """Create the pools (local, dirac, apptainer, docker; kubernetes with a cluster), keep them so.

    Each description tells operators, in the UI, what the pool runs and whether its worker
    can start; image and command defaults follow the last `esap-prefect images build`
    unless an operator chose others.
    """
    with get_client(sync_client=True) as client:
        for pool in _pools():
            try:
                found = client.read_work_pool(pool.name)
            except ObjectNotFound:
                with contextlib.suppress(ObjectAlreadyExists):
                    client.create_work_pool(
                        WorkPoolCreate(
                            name=pool.name,
                            type=pool.type,
                            base_job_template=_with_defaults(pool.template, pool.owned_defaults),
                            description=pool.description,
                        )
                    )
                continue
            if found.type != pool.type:
                continue
            template = _with_defaults(found.base_job_template, pool.owned_defaults, pool.template)
            if found.description != pool.description or template != found.base_job_template:
                client.update_work_pool(
                    pool.name,
                    WorkPoolUpdate(description=pool.description, base_job_template=template),
                )


def _pools() -> list[Pool]:
    images = runtime_image.recorded(runtime_image.default_cache())
    facilities = list_facilities()
    sif = images["apptainer"].reference if "apptainer" in images else ""
    commands = sorted({f.singularity for f in facilities if isinstance(f, ApptainerFacility)})
    singularity = commands[0] if commands else "apptainer"
    tag = images["docker"].reference if "docker" in images else ""
    shared = home()  # containers of this host's workers archive into this home
    return [
        Pool(
            LOCAL_POOL,
            WarmWorker.type,
            WarmWorker.get_default_base_job_template(),
            "esap-prefect: flow runs as local processes, forked warm",
        ),
        Pool(
            DIRAC_POOL,
            DiracWorker.type,
            DiracWorker.get_default_base_job_template(),
            _dirac_description(facilities),
        ),
        Pool(
            APPTAINER_POOL,
            ApptainerWorker.type,
            ApptainerWorker.get_default_base_job_template(),
            _apptainer_description(sif),
            {"image": sif, "singularity": singularity},
        ),
        Pool(
            DOCKER_POOL,
            DockerWorker.type,
            DockerWorker.get_default_base_job_template(),
            _docker_description(tag),
            {
                "image": tag,
                "image_pull_policy": "Never",
                "network_mode": "host",
                "volumes": [f"{shared}:{shared}"],
                "env": {"ESAP_PREFECT_HOME": str(shared)},
            },
        ),
        *_kubernetes_pools(facilities, tag),
    ]


def _kubernetes_pools(facilities: list[FacilityBlock], tag: str) -> list[Pool]:
    """The `kubernetes` pool, once a Kubernetes facility is saved.

    prefect-kubernetes is imported only then: it takes seconds.
    """
    if not any(f.kind == "kubernetes" for f in facilities):
        return []
    from deployments import kubernetes_pool

    cluster = kubernetes_pool.cluster_facility(facilities)
    return [
        Pool(
            KUBERNETES_POOL,
            KUBERNETES_TYPE,
            kubernetes_pool.template(),
            kubernetes_pool.description(cluster, tag),
            kubernetes_pool.defaults(cluster, tag, home()),
        )
    ]


def _with_defaults(
    template: dict[str, Any], defaults: dict[str, Any], pristine: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The template with these variable defaults, keeping those an operator chose.

    A default is ours when it is unset, empty, the worker type's own, or a runtime image an
    earlier build made (`pristine` is the worker type's template; None: all are ours).
    """
    own = (pristine or {}).get("variables", {}).get("properties", {})
    result = copy.deepcopy(template)
    properties = result.get("variables", {}).get("properties", {})
    for name, value in defaults.items():
        if name not in properties or value in ("", None):
            continue
        current = properties[name].get("default")
        chosen = current not in ("", None, own.get(name, {}).get("default"))
        if pristine is not None and chosen and not runtime_image.is_runtime(str(current)):
            continue
        properties[name]["default"] = value
    return result


def _dirac_description(facilities: list[FacilityBlock]) -> str:
    grids = sorted(f.facility_name for f in facilities if f.kind == "dirac")
    what = "esap-prefect: each flow run executes as one DIRAC job through DiracX."
    if not grids:
        return (
            f"{what} Not configured: no DIRAC facility is saved; add one with `esap-prefect "
            "facilities add dirac NAME --url URL --credentials FILE`, then start "
            "`esap-prefect worker --pool dirac`."
        )
    return f"{what} DIRAC facilities: {', '.join(grids)}. Start `esap-prefect worker --pool dirac`."


def _apptainer_description(sif: str) -> str:
    what = (
        "esap-prefect: each flow run executes in the esap-prefect runtime image with "
        "`apptainer exec --containall` on the worker's host."
    )
    if not sif:
        return (
            f"{what} Not configured: no runtime image is built; run `esap-prefect images build "
            "--apptainer`, then `esap-prefect up` again (or set the pool's image)."
        )
    return f"{what} Image: {sif}. Start `esap-prefect worker --pool apptainer`."


def _docker_description(tag: str) -> str:
    what = (
        "Prefect's Docker worker (prefect-docker): each flow run is a container of the "
        "esap-prefect runtime image on the worker's Docker Engine ($DOCKER_HOST)."
    )
    if not tag:
        return (
            f"{what} Not configured: no runtime image is built; run `esap-prefect images build "
            "--docker`, then `esap-prefect up` again (or set the pool's image)."
        )
    return f"{what} Image: {tag}. Start `esap-prefect worker --pool docker`."


def apply_deployments() -> None:
    """Create or update the deployment of every workflow of the catalogue.

    Flows are found by module path, so this works from a clone and from an installed wheel.
    """
    names = block_names()
    choices = {
        "facility": (names.facilities, "the planner chooses"),
        "store": (names.stores, "the local archive"),
        "input_store": (names.rucio_stores, "the only Rucio store"),
    }
    clusters = any(f.kind == "kubernetes" for f in list_facilities())
    for workflow in WORKFLOWS.values():
        description = " ".join(p for p in (workflow.description, workflow.deployment_notes) if p)
        for name, pool in workflow.placements():
            if pool == KUBERNETES_POOL and not clusters:
                continue  # its pool comes with the first Kubernetes facility
            main = pool == workflow.work_pool
            schedules = (
                [Cron(workflow.cron, timezone="UTC", active=False)]
                if workflow.cron and main
                else None
            )
            deployment = cast(
                RunnerDeployment,
                workflow.load().to_deployment(
                    name=name,
                    description=description,
                    tags=list(workflow.tags),
                    parameters=dict(workflow.parameters),
                    schedules=schedules,
                    work_pool_name=pool,
                    entrypoint_type=EntrypointType.MODULE_PATH,
                ),
            )
            deployment._parameter_openapi_schema = _with_choices(
                deployment._parameter_openapi_schema, choices
            )
            try:
                deployment.apply()
            except Exception as exc:
                raise BootstrapError(
                    f"deployment {workflow.name}/{name} could not be applied: {exc}"
                ) from exc


def _with_choices(
    schema: ParameterSchema, choices: dict[str, tuple[list[str], str]]
) -> ParameterSchema:
    """The run form's schema with facility and store names to pick among, empty allowed.

    Saved names at the time of deploying: `esap-prefect up` and `facilities add` / `stores
    add` (with a stack running) deploy again.
    """
    properties = dict(schema.properties)
    for name, (names, empty) in choices.items():
        if name not in properties or not names:
            continue
        # a select of the names; its empty choice ("") means what no value means
        prop = {k: v for k, v in properties[name].items() if k not in ("anyOf", "type")}
        prop.update(type="string", enum=["", *names], default="")
        prop["description"] = f"{prop.get('description', '').split(';')[0]}; empty: {empty}."
        properties[name] = prop
    return schema.model_copy(update={"properties": properties})


def prepare() -> None:
    """Block types, default blocks, the work pools and crash detection, in order."""
    register_block_types()
    ensure_default_blocks()
    ensure_work_pools()
    ensure_crash_detection()
