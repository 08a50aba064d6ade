"""Names of what a flow run leaves in Prefect: artifact keys per workflow, task run names.

Each artifact key holds one kind of thing for one workflow, so its history in the UI's
Artifacts page compares like with like.
"""

from __future__ import annotations

import re

from prefect.runtime import flow_run


def workflow_key(workflow: str, *parts: str) -> str:
    """`<workflow>-<part>-...`, in the lower-case form Prefect's artifact keys take."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join((workflow, *parts)).lower()).strip("-")


def artifact_key(*parts: str) -> str:
    """The key of this flow run's artifact of a kind: `workflow_key(<its flow>, *parts)`."""
    return workflow_key(flow_run.get_flow_name() or "esap", *parts)
