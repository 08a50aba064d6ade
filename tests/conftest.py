"""Test fixtures: a private $ESAP_PREFECT_HOME and one real Prefect API for the session.

The home is set before anything imports Prefect, so no test touches the user's files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

_HOME = Path(tempfile.mkdtemp(prefix="esap-prefect-tests-"))
os.environ["ESAP_PREFECT_HOME"] = str(_HOME)
for _leftover in ("PREFECT_API_URL", "PREFECT_PROFILE"):
    os.environ.pop(_leftover, None)

from core.settings import configure_prefect_environment  # noqa: E402

configure_prefect_environment()

from core.settings import AUTH_VARIABLES  # noqa: E402
from tests import leaks  # noqa: E402

leaks.secret(os.environ[AUTH_VARIABLES[0]])

from blocks.outbound import ALLOW_VARIABLE  # noqa: E402
from deployments.processes import free_port  # noqa: E402

# the session's VO service is on loopback, which the guarded client refuses unless allowed;
# every process the suite starts inherits this
_VO_PORT = free_port()
os.environ[ALLOW_VARIABLE] = f"127.0.0.1:{_VO_PORT}"

import contextlib  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

if TYPE_CHECKING:
    from blocks import DiracFacility
    from blocks.rucio import RucioStore
    from tests.gridsim import GridSimulator
    from tests.servers.containers import DockerEngine
    from tests.servers.diracx import DiracXServer
    from tests.servers.kubelet import StandInCluster
    from tests.servers.postgres import PostgresServer
    from tests.servers.rucio import RucioServer
    from tests.servers.vo import VoService
    from tests.stack import Gateway, Issuer


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
def diracx_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DiracXServer]:
    """A real DiracX 0.7 server (own venv, S3 sandbox store) for the session."""
    from tests.servers.diracx import DiracXServer

    server = DiracXServer(tmp_path_factory.mktemp("diracx"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def grid(
    diracx_server: DiracXServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[DiracFacility, GridSimulator]]:
    from blocks import DiracFacility
    from tests.gridsim import GridSimulator
    from tests.servers.diracx import ADMIN_GROUP

    folder = tmp_path_factory.mktemp("dirac-creds")
    owner = diracx_server.credentials(folder / "owner.json")
    admin = diracx_server.credentials(folder / "admin.json", "pilot", ADMIN_GROUP)
    facility = DiracFacility(
        url=diracx_server.url,
        credentials_path=owner,
        output_path="/cta/user/e/esap",
        output_se="SE-TEST",
    )
    yield facility, GridSimulator(diracx_server.url, admin, owner, diracx_server.job_db_url)


@pytest.fixture
def pilot(grid: tuple[DiracFacility, GridSimulator]) -> Iterator[GridSimulator]:
    """The simulator running pilot cycles in the background while the test runs."""
    _, sim = grid
    stop = threading.Event()

    def cycle() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the server may be restarting
                sim.run_once()
            time.sleep(0.2)

    thread = threading.Thread(target=cycle, daemon=True)
    thread.start()
    yield sim
    stop.set()
    thread.join()
    sim.fates = lambda _name: "run"


@pytest.fixture(scope="session")
def rucio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RucioServer]:
    """A real Rucio 41 server (own venv, SQLite) with two RSEs on local directories."""
    from tests.servers.rucio import RucioServer

    root = tmp_path_factory.mktemp("rucio")
    server = RucioServer(root)
    server.start()
    try:
        server.add_rse("ESAP_ARCHIVE", root / "rse-archive")
        server.add_rse("SITE_B", root / "rse-site-b")
        yield server
    finally:
        server.stop()


@pytest.fixture
def rucio_store(rucio_server: RucioServer) -> RucioStore:
    """A store for the test Rucio server (root account, userpass), archiving to ESAP_ARCHIVE."""
    from pydantic import SecretStr

    from blocks.rucio import RucioStore

    return RucioStore(
        rucio_host=rucio_server.url,
        account="root",
        username=rucio_server.user,
        password=SecretStr(rucio_server.password),
        archive_rse="ESAP_ARCHIVE",
        rule_lifetime="7d",
        send_traces=False,  # the test server has no trace broker and answers traces slowly
    )


@pytest.fixture(scope="session")
def vo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoService]:
    """A VO service on loopback serving files and DataLink VOTables."""
    from tests.servers.vo import vo_service

    with vo_service(tmp_path_factory.mktemp("vo"), _VO_PORT) as service:
        yield service


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    """A real Docker Engine (dockerd on a private socket) with the test image built."""
    from tests.servers.containers import DockerEngine

    root = tmp_path_factory.mktemp("docker")
    engine = DockerEngine(root)
    engine.start()
    try:
        engine.build_image("esap-test/payload:1", root / "build")
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def kube(docker_engine: DockerEngine) -> Iterator[StandInCluster]:
    """The stand-in Kubernetes API server, its node playing pods on the session's Docker."""
    from tests.servers.kubelet import StandInCluster

    with StandInCluster(docker_engine.url) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def singularity(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `singularity` command: real Apptainer (Debian sid) in a private mount namespace."""
    from tests.servers.containers import singularity_shim
    from tests.servers.venvs import ROOT

    return singularity_shim(
        tmp_path_factory.mktemp("apptainer-bin"), [Path(tempfile.gettempdir()), ROOT]
    )


@pytest.fixture(scope="session")
def sif_image(singularity: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SIF image of busybox whose runscript is the test payload."""
    from tests.servers.containers import build_sif

    work = tmp_path_factory.mktemp("sif")
    return build_sif(singularity, work / "payload.sif", work)


@pytest.fixture(scope="session")
def issuer(vo: VoService) -> Issuer:
    """An OIDC issuer (an RSA key, its JWKS served by the VO service)."""
    from tests.stack import Issuer

    return Issuer(vo)


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory, issuer: Issuer) -> Iterator[Gateway]:
    """One whole `esap-prefect up` stack (server, worker, gateway) for the gateway tests."""
    from tests.stack import ESAP_ORIGIN, running_stack

    home = tmp_path_factory.mktemp("gateway-home")
    with running_stack(home, issuer, ESAP_GATEWAY_CORS_ORIGINS=ESAP_ORIGIN) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def dock(gateway: Gateway, docker_engine: DockerEngine) -> str:
    """A Docker facility named `dock` saved in the session's stack."""
    added = gateway.cli("facilities", "add", "docker", "dock", "--url", docker_engine.url,
                        "--max-cores", "2", "--overwrite")  # fmt: skip
    assert added.returncode == 0, added.stderr
    return "dock"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL (Debian's package), password auth on loopback, for this session."""
    from tests.servers.postgres import PostgresServer

    server = PostgresServer(Path(tempfile.mkdtemp(prefix="esap-pg-")))
    server.initialise().start().create_database()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a gateway store lives: a file, or a database of its own on the session's server."""
    if request.param == "sqlite":
        return str(tmp_path / "gateway.db")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.fresh_database()
