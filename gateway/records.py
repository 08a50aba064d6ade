"""What the gateway keeps about a UWS job: its record, its results, and a change to it.

Plain pydantic models shared by the store, the service, the documents and the routes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.params import check_text
from core.states import UWSPhase


def _text(limit: int) -> AfterValidator:
    return AfterValidator(lambda value: check_text(value, "text", limit))


Text = Annotated[str, _text(4096)]


class Result(BaseModel):
    """One result of a job: an archived output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Text
    href: Text
    size: int | None = Field(default=None, ge=0, le=2**63 - 1)
    mime_type: Annotated[str, _text(255)] | None = None
    location: str | None = None


class JobRecord(BaseModel):
    """One UWS job as the gateway keeps it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    owner: str
    workflow: str
    run_id: str | None
    phase: UWSPhase
    parameters: dict[str, str]
    flow_parameters: dict[str, Any]
    creation_time: datetime
    start_time: datetime | None
    end_time: datetime | None
    execution_duration: int
    destruction: datetime
    error_type: str | None
    error_message: str | None
    results: list[Result]
    flow_run_id: str | None
    token_hash: str | None
    reported_phase: UWSPhase | None = None
    reported_error: str | None = None


class JobUpdate(BaseModel):
    """A change to a job: only the fields set are written (`model_fields_set`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workflow: str | None = None
    run_id: str | None = None
    phase: UWSPhase | None = None
    parameters: dict[str, str] | None = None
    flow_parameters: dict[str, Any] | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    execution_duration: int | None = None
    destruction: datetime | None = None
    error_type: str | None = None
    error_message: str | None = None
    results: list[Result] | None = None
    flow_run_id: str | None = None
    token_hash: str | None = None
    reported_phase: UWSPhase | None = None
    reported_error: Annotated[str, _text(4096)] | None = None

    def changes(self) -> dict[str, Any]:
        """The fields this update sets, with their values (None included when set)."""
        return {name: getattr(self, name) for name in self.model_fields_set}

    def __or__(self, other: JobUpdate) -> JobUpdate:
        """Both updates, `other` winning where both set a field."""
        return JobUpdate.model_validate({**self.changes(), **other.changes()})
