"""`esap-prefect run`: a workflow through its deployment on a running stack, or in this process.

Either way the user sees where to watch it (the Prefect UI), one line if it fails, and the
result as JSON when it completes.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, cast

import typer
from pydantic import BaseModel

from core.backoff import Backoff
from core.errors import plain_message


class RunFailed(Exception):
    """The run ended without completing; the message is the one line to show."""


def ui_link(api_url: str | None, run_id: uuid.UUID | str) -> str | None:
    """The Prefect UI page of a flow run, when the API has a UI beside it."""
    if not api_url:
        return None
    return f"{api_url.rstrip('/').removesuffix('/api')}/runs/flow-run/{run_id}"


def check_names(parameters: dict[str, Any]) -> None:
    """ValueError naming a facility or store that is not saved (with those that are)."""
    from blocks.registry import block_names

    names = block_names()
    for parameter, known in (
        ("facility", names.facilities),
        ("store", names.stores),
        ("input_store", names.rucio_stores),
    ):
        value = parameters.get(parameter)
        plain = str(value).rpartition("/")[2] if value else None
        if plain and plain not in known:
            what = "Rucio store" if parameter == "input_store" else parameter
            raise ValueError(
                f"no {what} named {value!r}; known: {', '.join(known) or '(none saved)'}"
            )


def show(result: Any) -> None:
    """A result as indented JSON on standard output."""
    if isinstance(result, BaseModel):
        typer.echo(result.model_dump_json(indent=2))
    else:
        typer.echo(json.dumps(result, indent=2, default=str))


def via_deployment(deployment: str, parameters: dict[str, Any], api_url: str) -> Any:
    """Run the deployment (tagged `cli`), follow it to the end; its result.

    Ctrl-C cancels the run. Raises RunFailed with the line to show if it does not complete.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import FlowRun
    from prefect.deployments import run_deployment
    from prefect.exceptions import PrefectHTTPStatusError
    from prefect.states import Cancelling

    try:
        run = cast(
            FlowRun, run_deployment(deployment, parameters=parameters, timeout=0, tags=["cli"])
        )
    except PrefectHTTPStatusError as exc:
        if exc.response.status_code != 409:
            raise
        detail = exc.response.json().get("detail", str(exc))
        raise RunFailed(f"Prefect refused the parameters: {detail}") from None
    typer.echo(f"Prefect UI: {ui_link(api_url, run.id)}", err=True)
    pause = Backoff(0.5, 5.0)
    seen = None
    with get_client(sync_client=True) as client:
        try:
            while True:
                run = client.read_flow_run(run.id)
                state = run.state
                if state is not None and state.name != seen:
                    seen = state.name
                    typer.echo(f"{run.name}: {state.name}", err=True)
                if state is not None and state.is_final():
                    break
                time.sleep(pause.step(changed=state is not None and state.name != seen))
        except KeyboardInterrupt:
            client.set_flow_run_state(run.id, Cancelling(), force=True)
            raise RunFailed(f"{run.name} cancelled (Ctrl-C)") from None
    assert state is not None
    if not state.is_completed():
        raise RunFailed(f"{run.name} ended {state.name}: {plain_message(state.message or '')}")
    return state.result()


def in_process(flow: Any, parameters: dict[str, Any], api_url: str | None) -> Any:
    """Run the flow here; its result. Raises RunFailed with the line to show."""
    from core.errors import UnknownBlockError

    state = flow(**parameters, return_state=True)
    if state.is_completed():
        return state.result()
    error = state.result(raise_on_failure=False)
    known = ""
    if isinstance(error, UnknownBlockError) and error.known:
        known = f"; known: {', '.join(error.known)}"
    link = ui_link(api_url, state.state_details.flow_run_id)
    raise RunFailed(
        f"{flow.name} ended {state.name}: {plain_message(state.message or '')}{known}"
        + (f"\nPrefect UI: {link}" if link else "")
    )
