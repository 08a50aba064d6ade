"""What a flow run of the `dirac` pool becomes: the pool's variables and one DIRAC job spec.

The job runs the bootstrap below from its input sandbox; the flow run id is its only argument.
"""

from __future__ import annotations

from typing import Any

from prefect.client.schemas.objects import FlowRun
from prefect.workers.base import BaseJobConfiguration, BaseVariables
from pydantic import Field

from blocks.dirac.facility import DiracFacility
from core.jobs import InputFile, JobSpec
from core.units import parse_duration, parse_memory

BOOTSTRAP = "esap-bootstrap.sh"
BOOTSTRAP_SCRIPT = """\
#!/bin/sh
# esap-prefect: run one Prefect flow run on this grid node (the `dirac` work pool's job).
# The environment (the Prefect API and its credential) was exported by esap-env.sh from the
# input sandbox; the node's Python comes from ESAP_ACTIVATE or runs in ESAP_IMAGE.
set -u
export PREFECT__FLOW_RUN_ID="$1"
export PREFECT_HOME="$PWD/.prefect" ESAP_PREFECT_HOME="$PWD/esap-home"
if [ -n "${ESAP_ACTIVATE:-}" ]; then
    if [ ! -r "$ESAP_ACTIVATE" ]; then
        echo "esap-prefect: cannot read the activation script $ESAP_ACTIVATE" >&2
        exit 70
    fi
    . "$ESAP_ACTIVATE"
fi
echo "esap-prefect: flow run $1 on $(uname -n) in $PWD" >&2
if [ -n "${ESAP_IMAGE:-}" ]; then
    export APPTAINERENV_PREFECT__FLOW_RUN_ID="$1"
    export APPTAINERENV_PREFECT_HOME="$PREFECT_HOME"
    export APPTAINERENV_ESAP_PREFECT_HOME="$ESAP_PREFECT_HOME"
    exec apptainer exec --containall --bind "$PWD" --pwd "$PWD" "$ESAP_IMAGE" $ESAP_FLOW_COMMAND
fi
exec $ESAP_FLOW_COMMAND
"""
WORKER_ONLY = ("PREFECT__FLOW_RUN_ID", "PREFECT__WORKER_ID", "PREFECT__WORKER_NAME")
"""Variables that differ between submissions of the same run: kept out of the job, so that
a run submitted again (a restarted worker) has the same spec."""


class _Fields(BaseVariables):
    """The JDL fields of a flow run's job, and how the node gets its Python."""

    facility: str = Field(
        default="",
        title="DIRAC facility",
        description="Saved DIRAC Facility block whose DiracX server and credentials submit the "
        "job; empty: the only one saved.",
    )
    sites: list[str] = Field(
        default_factory=list, description="Sites the job may run at; empty: the facility's."
    )
    banned_sites: list[str] = Field(
        default_factory=list, description="Sites to avoid; empty: the facility's."
    )
    platform: str | None = Field(
        default=None, description="DIRAC platform of the node, e.g. x86_64-el9."
    )
    tags: list[str] = Field(default_factory=list, description="DIRAC tags the node must have.")
    cpu_time: str = Field(
        default="2h", title="CPU time", description="CPU time the job asks for, e.g. 2h or 90m."
    )
    processors: int = Field(default=1, ge=1, description="Processors (cores) the job asks for.")
    memory: str | None = Field(default=None, description="Memory the job asks for, e.g. 4G.")
    priority: int | None = Field(
        default=None, ge=0, le=10, description="Job priority within the group, 0 to 10."
    )
    job_group: str | None = Field(
        default=None, description="DIRAC JobGroup; empty: esap-<deployment name>."
    )
    activate: str | None = Field(
        default=None,
        description="Script the node sources before the flow run, e.g. a CVMFS-served "
        "environment's bin/activate with esap-prefect installed.",
    )
    image: str | None = Field(
        default=None,
        description="Apptainer image on the node (e.g. a CVMFS path of the runtime image) "
        "the flow run executes in instead.",
    )


class DiracVariables(_Fields):
    """Variables of the `dirac` pool, editable per deployment in the UI's run form."""


class DiracJobConfiguration(BaseJobConfiguration):
    """A flow run's DIRAC job, as the pool's template and the deployment fill it."""

    facility: str = Field(default="")
    sites: list[str] = Field(default_factory=list)
    banned_sites: list[str] = Field(default_factory=list)
    platform: str | None = None
    tags: list[str] = Field(default_factory=list)
    cpu_time: str = "2h"
    processors: int = 1
    memory: str | None = None
    priority: int | None = None
    job_group: str | None = None
    activate: str | None = None
    image: str | None = None

    def for_facility(self, facility: DiracFacility) -> DiracFacility:
        """The facility with this run's site, platform, tags and priority where set."""
        update: dict[str, Any] = {
            "sites": self.sites or facility.sites,
            "banned_sites": self.banned_sites or facility.banned_sites,
            "platform": self.platform or facility.platform,
            "tags": self.tags or facility.tags,
            "priority": facility.priority if self.priority is None else self.priority,
        }
        return facility.model_copy(update=update)

    def job_spec(self, flow_run: FlowRun) -> JobSpec:
        """The flow run as one job named by its id (the key a restarted worker looks up)."""
        env = {k: v for k, v in self.env.items() if v is not None and k not in WORKER_ONLY}
        env["ESAP_FLOW_COMMAND"] = self.command or "prefect flow-run execute"
        if self.activate:
            env["ESAP_ACTIVATE"] = self.activate
        if self.image:
            env["ESAP_IMAGE"] = self.image
            env |= {f"APPTAINERENV_{k}": v for k, v in env.items() if not k.startswith("ESAP_")}
        deployment = str(self.labels.get("prefect.io/deployment-name") or "adhoc")
        group = self.job_group or f"esap-{deployment}"
        return JobSpec(
            name=str(flow_run.id),
            executable="/bin/sh",
            arguments=[BOOTSTRAP, str(flow_run.id)],
            env=env,
            inputs=[InputFile(name=BOOTSTRAP, content=BOOTSTRAP_SCRIPT, executable=True)],
            group="".join(c if c.isalnum() or c in "._-" else "-" for c in group)[:128],
            cores=self.processors,
            memory=parse_memory(self.memory) if self.memory else None,
            walltime=parse_duration(self.cpu_time),
        )
