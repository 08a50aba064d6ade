"""How a UWS job's payloads call back to the gateway: the names both sides agree on.

The gateway tags the job's flow run and keeps the credentials in a Secret block; the flow
hands them to every payload job as environment variables.
"""

from __future__ import annotations

CALLBACK_TAG = "uws-job-"
"""Flow runs of UWS jobs are tagged `uws-job-<id>`; the Secret block of that name holds
`{url, job_id, token}` until the job is final."""

URL_VARIABLE = "ESAP_UWS_URL"
"""django-uws's app root (it holds `jobs/`), as `uws.client.Client(host)` takes it."""
JOB_ID_VARIABLE = "ESAP_UWS_JOB_ID"
TOKEN_VARIABLE = "ESAP_UWS_JOB_TOKEN"


def callback_block(job_id: str) -> str:
    """The name of the Secret block (and the flow-run tag) of a job's call-backs."""
    return f"{CALLBACK_TAG}{job_id}"
