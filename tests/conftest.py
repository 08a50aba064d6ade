"""Test fixtures: a private $ESAP_PREFECT_HOME and one real Prefect API for the session.

The home is set before anything imports Prefect, so no test touches the user's files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="esap-prefect-tests-"))
os.environ["ESAP_PREFECT_HOME"] = str(_HOME)
for _leftover in ("PREFECT_API_URL", "PREFECT_PROFILE"):
    os.environ.pop(_leftover, None)

from esap_prefect.settings import configure_prefect_environment  # noqa: E402

configure_prefect_environment()

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def esap_home() -> Path:
    """The session's $ESAP_PREFECT_HOME."""
    return _HOME


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real Prefect API server (SQLite, own process) for the whole session; its URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def diracx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real DiracX 0.7 server (own venv, S3 sandbox store) for the session."""
    from tests.servers.diracx import DiracXServer

    server = DiracXServer(tmp_path_factory.mktemp("diracx"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
