"""Prepare a Prefect server for esap-prefect: block types, default blocks, work pool, deployments.

Every step is idempotent: running it against a prepared server changes nothing.
"""

from __future__ import annotations

import contextlib
from typing import cast

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType
from prefect.utilities.callables import ParameterSchema

from blocks.archive import LocalArchive
from blocks.catalogue import FACILITY_TYPES, STORE_TYPES
from blocks.local import LocalFacility
from blocks.registry import DEFAULT_NAME, block_names, list_facilities
from flows.registry import DIRAC_POOL, LOCAL_POOL, WORKFLOWS
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


def ensure_work_pools() -> None:
    """Create the `local` (warm processes) and `dirac` pools if missing; say what `dirac` lacks.

    The `dirac` pool's description tells operators, in the UI, whether its worker can start.
    """
    dirac = _dirac_description()
    pools = (
        (LOCAL_POOL, WarmWorker, "esap-prefect: flow runs as local processes, forked warm"),
        (DIRAC_POOL, DiracWorker, dirac),
    )
    with get_client(sync_client=True) as client:
        for name, worker, description in pools:
            try:
                pool = client.read_work_pool(name)
            except ObjectNotFound:
                with contextlib.suppress(ObjectAlreadyExists):
                    client.create_work_pool(
                        WorkPoolCreate(
                            name=name,
                            type=worker.type,
                            base_job_template=worker.get_default_base_job_template(),
                            description=description,
                        )
                    )
                continue
            if pool.type == worker.type and pool.description != description:
                client.update_work_pool(name, WorkPoolUpdate(description=description))


def _dirac_description() -> str:
    grids = sorted(f.facility_name for f in list_facilities() if f.kind == "dirac")
    what = "esap-prefect: each flow run executes as one DIRAC job through DiracX."
    if not grids:
        return (
            f"{what} Not configured: no DIRAC facility is saved; add one with `esap-prefect "
            "facilities add dirac NAME --url URL --credentials FILE`, then start "
            "`esap-prefect worker --pool dirac`."
        )
    return f"{what} DIRAC facilities: {', '.join(grids)}. Start `esap-prefect worker --pool dirac`."


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
    for workflow in WORKFLOWS.values():
        description = " ".join(p for p in (workflow.description, workflow.deployment_notes) if p)
        for name, pool in workflow.placements():
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
    """Block types, default blocks and the work pool, in order."""
    register_block_types()
    ensure_default_blocks()
    ensure_work_pools()
