"""JDL job descriptions as a validated model, written with DIRAC's own ClassAd code.

No value can change the document's structure: unsafe characters are refused and every
JDL is parsed back and compared with what was meant before it is used.
"""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Self

from DIRACCommon.Core.Utilities.ClassAd.ClassAdLight import ClassAd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from core.errors import FatalError

# Measured against DIRACCommon 9.1's ClassAd: '"' and ';' end a value early, '[' hangs
# the parser, and list items lose their whitespace.
_UNSAFE = re.compile(r'["\\;\[\x00-\x1f\x7f]')
_UNSAFE_ITEM = re.compile(r'["\\;\[\s]')
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._%-]{0,127}$")


class JDLError(FatalError, ValueError):
    """A value cannot be written into JDL safely; the message names the attribute."""


def _safe(value: str) -> str:
    if _UNSAFE.search(value):
        raise ValueError(f'{value!r} holds one of " \\ ; [ or a control character')
    return value


def _safe_item(value: str) -> str:
    if _UNSAFE_ITEM.search(value):
        raise ValueError(f'list item {value!r} holds white space or one of " \\ ; [')
    return value


Safe = Annotated[str, AfterValidator(_safe)]
Item = Annotated[str, AfterValidator(_safe_item)]


class JobDescription(BaseModel):
    """The JDL attributes esap-prefect writes. Lists may be empty; None means unset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    executable: Safe = Field(min_length=1)
    arguments: list[str] = Field(default_factory=list)
    job_name: Safe
    job_group: Safe | None = None
    input_sandbox: list[Item] = Field(default_factory=list)
    output_sandbox: list[Item] = Field(default_factory=list)
    input_data: list[Item] = Field(default_factory=list)
    output_data: list[Item] = Field(default_factory=list)
    output_se: Safe | None = None
    output_path: Safe | None = None
    cpu_time: int = Field(ge=1)
    site: list[Item] = Field(default_factory=list)
    banned_sites: list[Item] = Field(default_factory=list)
    platform: Safe | None = None
    tags: list[Item] = Field(default_factory=list)
    number_of_processors: int = Field(default=1, ge=1)
    max_ram_mb: int | None = Field(default=None, ge=1)
    priority: int | None = Field(default=None, ge=0, le=10)
    std_output: Safe = "std.out"
    std_error: Safe = "std.err"
    parameters: list[Item] | None = Field(
        default=None, description="Parametric job: one job per value, %s and %n substituted."
    )

    @model_validator(mode="after")
    def _names(self) -> Self:
        for value, what in ((self.job_name, "JobName"), (self.job_group, "JobGroup")):
            if value is not None and not _NAME.fullmatch(value):
                raise ValueError(f"{what} {value!r} must be letters, digits, '.', '_', '%' or '-'")
        return self

    def _attributes(self) -> dict[str, str | int | list[str]]:
        """The JDL attributes by name, before writing."""
        for number, argument in enumerate(self.arguments, 1):
            if _UNSAFE.search(argument) or "'" in argument:
                raise JDLError(
                    f"argument {number} ({argument!r}) holds one of ' \" \\ ; [ or a control "
                    "character, which cannot pass safely through JDL and the worker's shell"
                )
        quoted = shlex.join(self.arguments)
        attributes: dict[str, str | int | list[str] | None] = {
            "Executable": self.executable,
            "Arguments": quoted or None,
            "JobName": self.job_name,
            "JobGroup": self.job_group,
            "InputSandbox": self.input_sandbox,
            "OutputSandbox": self.output_sandbox,
            "InputData": self.input_data,
            "OutputData": self.output_data,
            "OutputSE": self.output_se,
            "OutputPath": self.output_path,
            "CPUTime": self.cpu_time,
            "Site": self.site,
            "BannedSites": self.banned_sites,
            "Platform": self.platform,
            "Tags": self.tags,
            "NumberOfProcessors": self.number_of_processors,
            "MaxRAM": self.max_ram_mb,
            "Priority": self.priority,
            "StdOutput": self.std_output,
            "StdError": self.std_error,
            "Parameters": self.parameters,
        }
        return {k: v for k, v in attributes.items() if v is not None and v != []}

    def render(self) -> str:
        """The JDL text, checked by parsing it back with DIRAC's ClassAd."""
        wanted = self._attributes()
        classad = ClassAd("[]")
        for key, value in wanted.items():
            if isinstance(value, list):
                classad.insertAttributeVectorString(key, value)
            elif isinstance(value, int):
                classad.insertAttributeInt(key, value)
            else:
                classad.insertAttributeString(key, value)
        jdl: str = classad.asJDL()
        parsed = ClassAd(jdl)
        for key, value in wanted.items():
            if isinstance(value, list):
                got: object = parsed.getListFromExpression(key)
            elif isinstance(value, int):
                got = parsed.getAttributeInt(key)
            else:
                got = parsed.getAttributeString(key)
            if got != value:
                raise JDLError(f"JDL attribute {key} would not survive parsing: {value!r}")
        if sorted(parsed.getAttributes()) != sorted(wanted):
            raise JDLError("the JDL holds attributes that were not asked for")
        return jdl


def parse(jdl: str) -> ClassAd:
    """A ClassAd from JDL text (for reading jobs back)."""
    return ClassAd(jdl if jdl.strip().startswith("[") else f"[{jdl}]")
