"""The automation that marks an ESAP flow run Crashed when its heartbeats stop.

A flow process killed with its host sends nothing: Prefect's triggers notice the silence.
"""

from __future__ import annotations

from prefect.automations import AutomationCore, ChangeFlowRunState, EventTrigger, Posture
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from core import crashes

NAME = "esap-prefect: crashed flow runs"


def automation() -> AutomationCore:
    """Running ESAP flow runs (tag `esap`) silent for `crashes.silence()` become Crashed.

    Any event of the run (a heartbeat, a new state) ends the wait; the next heartbeat starts
    another. Workers then send Crashed runs back to their pool (`workers.crash_retry`).
    """
    silence = crashes.silence()
    return AutomationCore(
        name=NAME,
        description=(
            "esap-prefect: an ESAP flow run that sends no heartbeat for "
            f"{silence.total_seconds():g} s (its process or host is gone) is marked Crashed; "
            f"its pool's worker sends it back up to {crashes.retries()} time(s), and it finds "
            "the payload jobs it had submitted. Set ESAP_PREFECT_CRASH_AFTER and "
            "ESAP_PREFECT_CRASH_RETRIES, then run `esap-prefect up` or `server` again."
        ),
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.id": "prefect.tag.esap"},
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=silence,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=(
                    f"no heartbeat for {silence.total_seconds():g} s: its flow process or host "
                    "is gone"
                ),
            )
        ],
    )


def ensure_crash_detection() -> None:
    """Create the automation, or bring an existing one of its name up to date."""
    wanted = automation()
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(NAME)
        if not found:
            client.create_automation(wanted)
            return
        keep = {"owner_resource", "tags"}
        if AutomationCore.model_validate(found[0].model_dump()).model_dump(
            exclude=keep
        ) != wanted.model_dump(exclude=keep):
            client.update_automation(found[0].id, wanted)
