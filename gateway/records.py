"""What the gateway keeps about a UWS job: its record and its results.

Plain pydantic models shared by the store, the documents and the routes.
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
