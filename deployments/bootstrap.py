"""Prepare a Prefect server for esap-prefect: block types, default blocks, work pool, deployments.

Every step is idempotent: running it against a prepared server changes nothing.
"""

from __future__ import annotations

import contextlib
from typing import cast

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.schedules import Cron
from prefect.types.entrypoint import EntrypointType
from prefect.utilities.callables import ParameterSchema

from blocks.archive import LocalArchive
from blocks.catalogue import FACILITY_TYPES, STORE_TYPES
from blocks.local import LocalFacility
from blocks.registry import DEFAULT_NAME, block_names
from flows.registry import LOCAL_POOL, WORKFLOWS
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


def ensure_work_pool(name: str = LOCAL_POOL) -> None:
    """Create the `local` work pool (warm processes) if it is missing."""
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectNotFound):
            client.read_work_pool(name)
            return
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=WarmWorker.type,
                    base_job_template=WarmWorker.get_default_base_job_template(),
                    description="esap-prefect: flow runs as local processes, forked warm",
                )
            )


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
        schedules = [Cron(workflow.cron, timezone="UTC", active=False)] if workflow.cron else None
        description = " ".join(p for p in (workflow.description, workflow.deployment_notes) if p)
        deployment = cast(
            RunnerDeployment,
            workflow.load().to_deployment(
                name=workflow.deployment_name,
                description=description,
                tags=list(workflow.tags),
                parameters=dict(workflow.parameters),
                schedules=schedules,
                work_pool_name=workflow.work_pool,
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
                f"deployment {workflow.deployment} could not be applied: {exc}"
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
    ensure_work_pool()
