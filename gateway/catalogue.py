"""ESAP's batch catalogue from Prefect: workflows from the deployments, facilities from blocks.

Entries carry ESAP's catalogue fields first, then what Prefect and the planner know.
"""

from __future__ import annotations

import asyncio
import inspect
from importlib import metadata
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

from blocks.facility import FacilityBlock
from blocks.registry import list_facilities
from core.units import human_duration, human_memory
from flows.registry import WORKFLOWS
from gateway.workflows import ESAP_MAPPED, flow_function


def _ui_url() -> str:
    ui = PREFECT_UI_URL.value() or (PREFECT_API_URL.value() or "").removesuffix("/api")
    return str(ui).rstrip("/")


def matches(keyword: str, *texts: Any) -> bool:
    """Whether `keyword` (any case) is in one of the texts; an empty keyword matches all."""
    wanted = keyword.strip().lower()
    return not wanted or any(wanted in str(text).lower() for text in texts)


async def workflow_entries(client: PrefectClient, keyword: str) -> list[dict[str, Any]]:
    """The deployed workflows whose name, description or tags hold `keyword`."""
    names = sorted(WORKFLOWS)
    flows = await client.read_flows(flow_filter=FlowFilter(name=FlowFilterName(any_=names)))
    flow_names = {f.id: f.name for f in flows}
    deployments = await client.read_deployments(
        flow_filter=FlowFilter(name=FlowFilterName(any_=names))
    )
    version = metadata.version("esap-prefect")
    entries = []
    for deployment in sorted(deployments, key=lambda d: (flow_names.get(d.flow_id, ""), d.name)):
        workflow = WORKFLOWS.get(flow_names.get(deployment.flow_id, ""))
        if workflow is None or deployment.name != workflow.deployment_name:
            continue
        description = deployment.description or workflow.description
        if not matches(keyword, workflow.name, description, *deployment.tags):
            continue
        accepted = inspect.signature(flow_function(workflow.name)).parameters
        entries.append(
            {
                "name": workflow.name,
                "description": description,
                "url": f"{_ui_url()}/deployments/deployment/{deployment.id}",
                "ref": version,
                "filepath": workflow.entrypoint,
                "workflowtype": "prefect",
                "workflow": workflow.name,
                "deployment": workflow.deployment,
                "tags": sorted(deployment.tags),
                "parameters": deployment.parameter_openapi_schema,
                "defaults": deployment.parameters,
                "workflow_file_fields": {
                    esap: target for esap, target in ESAP_MAPPED.items() if target in accepted
                },
            }
        )
    return entries


def _facility_entry(facility: FacilityBlock, base: str) -> dict[str, Any]:
    capabilities = facility.capabilities()
    return {
        "name": facility.facility_name,
        "description": type(facility).get_description() or "",
        "url": facility.endpoint() or f"{base}/uws/jobs?facility={facility.facility_name}",
        "facilitytype": facility.kind,
        "runtimeengine": facility.runtime_engine,
        "tasktypes": sorted(t.value for t in capabilities.tasktypes),
        "maxcores": capabilities.maxcores,
        "maxmemory": human_memory(capabilities.maxmemory),
        "maxduration": human_duration(capabilities.maxduration),
        "closerse": capabilities.closerse,
        "preference": capabilities.preference,
    }


async def facility_entries(base: str, keyword: str) -> list[dict[str, Any]]:
    """The saved facilities (or the embedded local one) matching `keyword`."""
    facilities = await asyncio.to_thread(list_facilities)
    entries = [_facility_entry(f, base) for f in facilities]
    fields = ("name", "description", "facilitytype", "runtimeengine")
    return [e for e in entries if matches(keyword, *(e[f] for f in fields), *e["tasktypes"])]
