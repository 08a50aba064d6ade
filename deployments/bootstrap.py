"""Prepare a Prefect server for esap-prefect: block types, default blocks, work pool, deployments.

Every step is idempotent: running it against a prepared server changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import PREFECT_API_URL
from prefect.workers.process import ProcessWorker

from blocks.archive import LocalArchive
from blocks.catalogue import FACILITY_TYPES, STORE_TYPES
from blocks.local import LocalFacility
from blocks.registry import DEFAULT_NAME
from flows.pipeline import PROJECT_ROOT

LOCAL_POOL = "local"


class BootstrapError(RuntimeError):
    """The server could not be prepared; the message says which step and why."""


def register_block_types() -> None:
    """Make every facility and store type known to the server (and its UI)."""
    for cls in (*FACILITY_TYPES, *STORE_TYPES):
        cls.register_type_and_schema()


def ensure_default_blocks() -> None:
    """Save the embedded defaults as 'local' unless blocks of that name exist."""
    for cls in (LocalFacility, LocalArchive):
        try:
            cls.load(DEFAULT_NAME)
        except ValueError:
            cls().save(DEFAULT_NAME)


def ensure_work_pool(name: str = LOCAL_POOL) -> None:
    """Create the `local` process work pool if it is missing."""
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectNotFound):
            client.read_work_pool(name)
            return
        with contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=ProcessWorker.type,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="esap-prefect: flow runs as local processes",
                )
            )


def apply_deployments(prefect_file: Path = PROJECT_ROOT / "prefect.yaml") -> None:
    """Apply every deployment of prefect.yaml with Prefect's own `prefect deploy --all`."""
    prefect = Path(sys.executable).parent / "prefect"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    done = subprocess.run(
        [str(prefect), "--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file)],
        cwd=prefect_file.parent,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BootstrapError(f"prefect deploy failed for {prefect_file}:\n{tail}")


def bootstrap(deploy: bool = True) -> None:
    """All of the above, in order."""
    register_block_types()
    ensure_default_blocks()
    ensure_work_pool()
    if deploy:
        apply_deployments()
