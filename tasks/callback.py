"""The call-back credentials of the UWS job a flow run serves, for its payload jobs.

Read from the Secret block the gateway saved for the job; a run of no UWS job has none.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

from core.callbacks import CALLBACK_TAG, JOB_ID_VARIABLE, TOKEN_VARIABLE, URL_VARIABLE


def callback_environment() -> dict[str, str]:
    """ESAP_UWS_URL, ESAP_UWS_JOB_ID and ESAP_UWS_JOB_TOKEN for this flow run's payloads.

    Empty for runs that serve no UWS job, and for one whose job is already final (its
    Secret block is gone: the token died with the job).
    """
    tag = next((t for t in flow_run.tags if t.startswith(CALLBACK_TAG)), None)
    if tag is None:
        return {}
    try:
        with get_client(sync_client=True) as client:
            document = client.read_block_document_by_name(
                tag, block_type_slug="secret", include_secrets=True
            )
        value = document.data["value"]
    except ObjectNotFound:
        get_run_logger().warning("UWS job %s has no call-back token any more", tag)
        return {}
    get_run_logger().info(
        "payload jobs may call back to %s for UWS job %s", value["url"], value["job_id"]
    )
    return {
        URL_VARIABLE: str(value["url"]),
        JOB_ID_VARIABLE: str(value["job_id"]),
        TOKEN_VARIABLE: str(value["token"]),
    }
