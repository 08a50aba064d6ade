"""Job specs, job refs, statuses and outputs: what flows hand to facilities and get back.

The same models serve every facility; a facility adds nothing to them but its own job id.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from core.job_folder import copy_fd, open_file
from core.states import JobState
from core.units import MAX_CORES, Duration, Memory

_JOB_NAME = re.compile(r"^[A-Za-z0-9%][A-Za-z0-9._%-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LFN_DIR = re.compile(r"^(/[A-Za-z0-9._@+-]+)+/?$")


def _job_name(value: str) -> str:
    if not _JOB_NAME.fullmatch(value):
        raise ValueError(
            f"job name {value!r} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def relative_path(value: str) -> str:
    """A relative POSIX path inside a job's directory: no absolute path, no '..'."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts or "\x00" in value:
        raise ValueError(f"{value!r} must be a relative path inside the job directory")
    return value


def _env_names(value: dict[str, str]) -> dict[str, str]:
    for key, item in value.items():
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(f"environment variable name {key!r} is not valid")
        if "\x00" in item:
            raise ValueError(f"environment variable {key} holds a NUL character")
    return value


def _storage_element(value: str) -> str:
    if not _SE_NAME.fullmatch(value):
        raise ValueError(f"storage element {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    return value


def _lfn_directory(value: str) -> str:
    parts = value.strip("/").split("/")
    if not _LFN_DIR.fullmatch(value) or any(p in (".", "..") for p in parts) or len(value) > 512:
        raise ValueError(
            f"LFN directory {value!r} must be an absolute path such as /vo.cta.in2p3.fr/user/e/"
            "esap (letters, digits, '.', '_', '@', '+', '-'; no '..')"
        )
    return value


JobName = Annotated[str, AfterValidator(_job_name)]
StorageElement = Annotated[str, AfterValidator(_storage_element)]
"""A DIRAC storage element's name, e.g. CC-IN2P3-USER."""
LfnDirectory = Annotated[str, AfterValidator(_lfn_directory)]
"""An absolute LFN directory, e.g. /vo.cta.in2p3.fr/user/e/esap/."""
RelativePath = Annotated[str, AfterValidator(relative_path)]
Environment = Annotated[dict[str, str], AfterValidator(_env_names)]
"""Environment variables: valid names, no NUL in values."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputFile(_Model):
    """A file placed in the job's working directory before it starts."""

    name: RelativePath
    content: str | None = Field(default=None, description="Text written to the file.")
    source: Path | None = Field(default=None, description="A local file copied in.")
    executable: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.content is None) == (self.source is None):
            raise ValueError(f"input {self.name!r} needs exactly one of content or source")
        return self

    def place(self, directory: Path) -> Path:
        """Write or copy the file to its name under `directory`."""
        target = directory / self.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if self.content is not None:
            target.write_text(self.content)
        elif self.source is not None:
            with open_file(self.source) as fd:
                copy_fd(fd, target)
        if self.executable:
            target.chmod(0o755)
        return target


class JobSpec(_Model):
    """One payload job. Its name is the idempotency key: unique within a facility."""

    name: JobName
    executable: str = Field(
        default="",
        description="Program to run; in a container, empty runs the image's own entrypoint.",
    )
    arguments: list[str] = Field(default_factory=list)
    image: str | None = Field(default=None, description="Container image the job runs in.")
    env: Environment = Field(default_factory=dict)
    inputs: list[InputFile] = Field(default_factory=list)
    outputs: list[RelativePath] = Field(
        default_factory=list, description="Glob patterns, relative to the working directory."
    )
    output_data: list[RelativePath] = Field(
        default_factory=list,
        description="Files kept on the facility's storage instead of returned (DIRAC OutputData).",
    )
    output_se: StorageElement | None = Field(
        default=None, description="DIRAC: storage element of output_data (else the facility's)."
    )
    output_path: LfnDirectory | None = Field(
        default=None, description="DIRAC: LFN directory of output_data (else the facility's)."
    )
    group: JobName | None = Field(
        default=None, description="The batch the job belongs to, e.g. one flow run."
    )
    cores: int = Field(default=1, ge=1, le=MAX_CORES)
    memory: Memory | None = None
    walltime: Duration | None = Field(
        default=None, description="Wall-time limit (DIRAC: CPUTime); the facility default if unset."
    )

    @model_validator(mode="after")
    def _something_to_run(self) -> Self:
        if not self.executable and self.image is None:
            raise ValueError(f"job {self.name} needs an executable or a container image")
        return self


class JobArray(_Model):
    """Many jobs from one template, one per value (DIRAC's parametric jobs).

    `%s` in the template's name, arguments and env values is replaced by each value in
    turn; facilities without native arrays submit the expansion.
    """

    template: JobSpec
    values: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _template_is_parametric(self) -> Self:
        if "%s" not in self.template.name:
            raise ValueError("a job array's template name must contain %s")
        if len(set(self.values)) != len(self.values):
            raise ValueError("a job array's values must be distinct (they name the jobs)")
        return self

    def expand(self) -> list[JobSpec]:
        """One job spec per value."""
        data = self.template.model_dump()
        return [JobSpec.model_validate(_substitute(data, value)) for value in self.values]


def _substitute(data: object, value: str) -> object:
    if isinstance(data, str):
        return data.replace("%s", value)
    if isinstance(data, list):
        return [_substitute(item, value) for item in data]
    if isinstance(data, dict):
        return {key: _substitute(item, value) for key, item in data.items()}
    return data


class JobRef(_Model):
    """What a facility returns for a submitted job: enough to poll, fetch and cancel it."""

    facility: str
    job_id: str
    name: JobName


class JobLog(_Model):
    """The end of a job's stdout and stderr as it runs or after, and what else the facility says."""

    ref: JobRef
    stdout: str = ""
    stderr: str = ""
    detail: str = Field(default="", description="Facility status text (DIRAC: minor, app).")
    updated: datetime | None = Field(
        default=None, description="When the logs last changed; None when the facility cannot say."
    )


class JobStatus(_Model):
    """The state of a job at one poll."""

    ref: JobRef
    state: JobState
    detail: str = Field(default="", description="Facility status text, e.g. minor status.")
    exit_code: int | None = None
    reschedules: int = Field(default=0, description="Times this run rescheduled the job.")


class OutputFile(_Model):
    """One output file: its logical name (job/relative path) and where it is now."""

    name: str
    path: Path


class JobOutputs(_Model):
    """What came back from a job: declared outputs, logs, patterns unmatched, paths refused."""

    ref: JobRef
    files: list[OutputFile] = Field(default_factory=list)
    stdout: Path | None = None
    stderr: Path | None = None
    missing: list[str] = Field(default_factory=list)
    refused: list[str] = Field(
        default_factory=list,
        description="Paths the output patterns met that are not regular files inside the "
        "job's folder (links, FIFOs, devices), each with its reason; never collected.",
    )
    lfns: list[str] = Field(
        default_factory=list, description="Output data left on the facility's storage."
    )
