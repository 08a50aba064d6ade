"""What the gateway keeps about a UWS job: its record and its results.

Plain pydantic models shared by the store, the documents and the routes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from blocks.states import UWSPhase


class Result(BaseModel):
    """One result of a job: an archived output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    href: str
    size: int | None = None
    mime_type: str | None = None
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
