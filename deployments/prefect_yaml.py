"""prefect.yaml, generated from the workflow catalogue, for operators who `prefect deploy`.

`python -m deployments.prefect_yaml > prefect.yaml` writes it; a test keeps the two equal.
"""

from __future__ import annotations

from typing import Any

import yaml

from flows.registry import WORKFLOWS, Workflow

HEADER = """\
# Deployments of the ESAP workflows, generated from flows/registry.py by
# `python -m deployments.prefect_yaml > prefect.yaml`: edit the catalogue, not this file.
# `esap-prefect up` / `demo` apply the catalogue itself; operators can apply this file from a
# clone with `prefect deploy --all`.
"""


def _deployment(workflow: Workflow, name: str, pool: str) -> dict[str, Any]:
    description = " ".join(p for p in (workflow.description, workflow.deployment_notes) if p)
    entry: dict[str, Any] = {
        "name": name,
        "entrypoint": workflow.file_entrypoint,
        "description": description,
        "tags": list(workflow.tags),
        "parameters": dict(workflow.parameters),
        "work_pool": {"name": pool},
    }
    if workflow.cron and pool == workflow.work_pool:
        entry["schedules"] = [{"cron": workflow.cron, "timezone": "UTC", "active": False}]
    return entry


def render() -> str:
    """The whole prefect.yaml text."""
    import prefect

    document = {
        "name": "esap-prefect",
        "prefect-version": prefect.__version__,
        "build": None,
        "push": None,
        "deployments": [
            _deployment(w, name, pool) for w in WORKFLOWS.values() for name, pool in w.placements()
        ],
    }
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=96)


if __name__ == "__main__":
    print(render(), end="")
