"""CONCORDIA: steering cards, bad input, and CORSIKA images selected or built on real engines.

CORSIKA itself is licensed: the images are built from a stand-in source tree (tests/data).
"""

from __future__ import annotations

import concurrent.futures
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from blocks.apptainer import ApptainerFacility
from blocks.corsika import CorsikaSource, image_key, select_or_build
from blocks.dirac.facility import DiracFacility
from blocks.docker import DockerFacility
from core.corsika import (
    BuildConfig,
    BuildOption,
    HighEnergyModel,
    SteeringCard,
    Telescope,
    read_particle_file,
)
from core.errors import FatalError
from core.params import ParameterError, validate_parameters
from flows.concordia import concordia
from tests.gridsim import GridSimulator
from tests.helpers import latest_artifact
from tests.servers.containers import IMAGES, DockerEngine
from tests.servers.diracx import DiracXServer

STAND_IN = Path(__file__).parent / "data" / "corsika-stand-in"


def stand_in_source(folder: Path, version: int = 77550) -> Path:
    """The stand-in tree as CORSIKA's tarball is laid out: corsika-<version>/ at the top."""
    tarball = folder / f"corsika-{version}.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(STAND_IN, arcname=f"corsika-{version}")
    return tarball


CARD = SteeringCard(
    run=42,
    showers=5,
    primary=14,
    slope=-2.0,
    energy_min=10.0,
    energy_max=1000.0,
    observation_level=2200.0,
    scatter=(10, 1500.0, 0.0),
    telescopes=(Telescope(x=0, y=0, z=12.5, radius=12.5),),
    atmosphere=26,
)


def test_the_card_is_rendered_as_corsika_reads_it() -> None:
    assert CARD.render() == (
        "RUNNR   000042\nEVTNR   1\nNSHOW   5\nPRMPAR  14\nESLOPE  -2.0\n"
        "ERANGE  10.0 1000.0\nTHETAP  20.0 20.0\nPHIP    0.0 0.0\n"
        "SEED    0000421 0 0\nSEED    0000422 0 0\nSEED    0000423 0 0\n"
        "OBSLEV  220000.0\nMAGNET  20.0 42.8\nATMOSPHERE 26 T\n"
        "CSCAT   10 150000.0 0.0\nTELESCOPE 0.0 0.0 1250.0 1250.0\nDIRECT  ./\nEXIT\n"
    )
    # a job array fills the template: each run gets exactly its own card, seeds its own
    for run in (1, 42, 999_999):
        card = CARD.model_copy(update={"run": run})
        assert CARD.template().replace("@RUN@", f"{run:06d}") == card.render()
    seeds = {
        line
        for r in range(1, 50)
        for line in CARD.model_copy(update={"run": r}).render().splitlines()
        if line.startswith("SEED")
    }
    assert len(seeds) == 3 * 49


def test_cards_refuse_what_corsika_or_the_build_would_not_take() -> None:
    with pytest.raises(ValueError, match="energy range upside down"):
        SteeringCard(
            run=1,
            showers=1,
            primary=1,
            slope=-2,
            energy_min=100,
            energy_max=10,
            observation_level=0,
        )
    with pytest.raises(ValueError, match="not a primary"):
        SteeringCard(
            run=1, showers=1, primary=7, slope=-2, energy_min=1, energy_max=10, observation_level=0
        )
    with pytest.raises(ValueError, match="zenith"):
        SteeringCard(
            run=1,
            showers=1,
            primary=1,
            slope=-2,
            energy_min=1,
            energy_max=10,
            observation_level=0,
            zenith=(10.0, float("nan")),
        )
    baseline = BuildConfig(options=())
    with pytest.raises(ValueError, match=r"TELESCOPE \(it needs the IACT option\)"):
        CARD.for_build(baseline)
    thin = BuildConfig(options=(BuildOption.THIN, BuildOption.IACT))
    assert thin.executable == "corsika_qgs2_urqmd_iact-thin"
    assert CARD.for_build(thin) is CARD
    assert image_key(thin) != image_key(BuildConfig(options=(BuildOption.IACT,)))


BAD = [
    ({"high_energy_model": "QGSJET-I"}, "high_energy_model"),
    ({"energy_range": [1000, 10]}, "energy range upside down"),
    ({"viewcone": [0, 10]}, "cannot read VIEWCONE .it needs the VIEWCONE option"),
    (
        {"experiment": "KM3NeT", "telescopes": [{"x": 0, "y": 0, "z": 0, "radius": 5}]},
        "TELESCOPE .it needs the IACT option",
    ),
    ({"showers_per_run": 0}, "showers_per_run"),
    ({"first_run": 999_999, "runs": 2}, "goes past it"),
    ({"image": "busybox; rm -rf /"}, "image"),
    ({"image": "../../etc/passwd"}, "image"),
    ({"facility": "grid\x00"}, "facility"),
    ({"source": "a\nb"}, "source"),
    ({"spectral_slope": float("inf")}, "spectral_slope"),
]


@pytest.mark.parametrize(("given", "named"), BAD)
def test_bad_parameters_are_refused_before_anything_runs(given: dict[str, Any], named: str) -> None:
    with pytest.raises(ParameterError, match=named.replace("(", r"\(")):
        validate_parameters(concordia.fn, given, "concordia")


def test_the_stand_in_output_reads_back_with_corsikaio(tmp_path: Path) -> None:
    import subprocess

    exe = tmp_path / "corsika_qgs2_urqmd_iact"
    exe.write_bytes((STAND_IN / "src" / "corsika_stand_in.py").read_bytes())
    exe.chmod(0o755)
    (tmp_path / "corsika_qgs2_urqmd_iact.options").write_text("VERSION=77550\nOPTIONS=IACT\n")
    done = subprocess.run(
        [str(exe)], input=CARD.render(), cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    read = read_particle_file(tmp_path / "DAT000042")
    assert (read.run, read.showers, read.primary) == (42, 5, 14)
    assert 10 <= read.energy_min <= read.energy_max <= 1000
    # a truncated file is not taken for a run
    whole = (tmp_path / "DAT000042").read_bytes()
    (tmp_path / "DAT000043").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="not a whole CORSIKA particle file"):
        read_particle_file(tmp_path / "DAT000043")


# -- real engines ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corsika_source(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tarball = stand_in_source(tmp_path_factory.mktemp("corsika-source"))
    CorsikaSource(tarball=tarball).save("default", overwrite=True)
    return tarball


@pytest.fixture(autouse=True)
def _images(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ESAP_PREFECT_IMAGES", str(IMAGES))
    yield


def _run(facility: str, **given: Any) -> Any:
    return concordia(
        facility=facility, primary="proton", energy_range=(10.0, 1000.0), showers_per_run=5, **given
    )


def _check_archived(result: Any) -> None:
    """Every archived particle file reads back with its run, showers, primary, energies."""
    files = {a.name: Path(a.location.removeprefix("file://")) for a in result.archived}
    for run in result.simulated:
        read = read_particle_file(files[f"run{run.run:06d}/DAT{run.run:06d}"])
        assert (read.run, read.showers, read.primary) == (run.run, 5, 14)
        assert 10 <= read.energy_min <= read.energy_max <= 1000
        card = files[f"run{run.run:06d}/run{run.run:06d}.card"].read_text()
        assert f"RUNNR   {run.run:06d}" in card and "PRMPAR  14" in card
        assert "END OF RUN" in files[f"run{run.run:06d}/stdout.log"].read_text()
        assert (
            f'"image_key": "{result.image_key}"'
            in files[f"run{run.run:06d}/metadata.json"].read_text()
        )


@pytest.mark.slow
def test_docker_builds_once_then_selects_and_skips_archived_runs(
    prefect_api: str, docker_engine: DockerEngine, corsika_source: Path
) -> None:
    DockerFacility(base_url=docker_engine.url).save("corsika-docker", overwrite=True)
    first = _run("corsika-docker", runs=2, first_run=10)
    assert first.image_built and first.image.startswith("esap-prefect/corsika:77550-qgs2-")
    assert [r.run for r in first.simulated] == [10, 11] and first.failed == []
    _check_archived(first)
    second = _run("corsika-docker", runs=3, first_run=10)
    assert not second.image_built and second.image_digest == first.image_digest
    assert second.already_archived == [10, 11] and [r.run for r in second.simulated] == [12]
    _check_archived(second)
    summary = latest_artifact("concordia-summary")
    assert "| already archived (skipped) | 2 |" in summary and "| simulated now | 1 |" in summary
    assert "| showers read back | 5 |" in summary and "(selected)" in summary
    assert second.image_digest in summary and second.configuration_key in summary
    given = _run("corsika-docker", runs=1, first_run=10, image=first.image)
    assert given.image == first.image and not given.image_built and given.image_key == ""
    assert given.archive_key != first.archive_key  # an explicit image is its own configuration
    _check_archived(given)
    epos = _run("corsika-docker", runs=1, first_run=10, high_energy_model="EPOS-LHC")
    assert epos.image_built and epos.image_digest != first.image_digest
    assert epos.build.executable == "corsika_epos_urqmd_iact"
    _check_archived(epos)


@pytest.mark.slow
def test_two_runs_of_one_configuration_build_it_once(
    prefect_api: str, docker_engine: DockerEngine, corsika_source: Path
) -> None:
    facility = DockerFacility(base_url=docker_engine.url)
    build = BuildConfig(high_energy_model=HighEnergyModel.SIBYLL_23D, options=())
    source = CorsikaSource(tarball=corsika_source)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        made = list(pool.map(lambda _: select_or_build(facility, build, source), range(2)))
    assert sorted(m.built for m in made) == [False, True]
    assert made[0].digest == made[1].digest


@pytest.mark.slow
def test_apptainer_builds_a_sif_once_then_selects_it(
    prefect_api: str, singularity: Path, corsika_source: Path, tmp_path: Path
) -> None:
    ApptainerFacility(singularity=str(singularity), workdir=tmp_path / "jobs").save(
        "corsika-apptainer", overwrite=True
    )
    first = _run("corsika-apptainer", runs=2, first_run=20, experiment="KM3NeT")
    assert first.image_built and first.image.endswith(f"corsika-{first.image_key}.sif")
    assert first.build.executable == "corsika_qgs2_urqmd_baseline"
    _check_archived(first)
    second = _run("corsika-apptainer", runs=2, first_run=22, experiment="KM3NeT")
    assert not second.image_built and second.image_digest == first.image_digest
    _check_archived(second)


def _jobs_on(grid: DiracFacility) -> int:
    from diracx.client.sync import SyncDiracClient
    from diracx.core.preferences import DiracxPreferences

    prefs = DiracxPreferences(url=grid.url, credentials_path=grid.credentials_path)
    with SyncDiracClient(diracx_preferences=prefs) as client:
        return len(client.jobs.search(parameters=["JobID"], per_page=10000))


@pytest.mark.slow
def test_dirac_runs_a_listed_image_and_refuses_an_unlisted_key(
    prefect_api: str,
    singularity: Path,
    corsika_source: Path,
    diracx_server: DiracXServer,
    pilot: GridSimulator,
    tmp_path: Path,
) -> None:
    build = BuildConfig(options=())
    local = ApptainerFacility(singularity=str(singularity), workdir=tmp_path / "jobs")
    sif = select_or_build(local, build, CorsikaSource(tarball=corsika_source))
    creds = diracx_server.credentials(tmp_path / "creds.json")
    grid = DiracFacility(
        url=diracx_server.url, credentials_path=creds, singularity=str(singularity)
    )
    grid.save("corsika-grid", overwrite=True)
    before = _jobs_on(grid)
    with pytest.raises(FatalError, match=f"lists no image for CORSIKA configuration {sif.key}"):
        _run("corsika-grid", runs=1, first_run=30, experiment="KM3NeT")
    assert _jobs_on(grid) == before  # nothing was submitted
    grid.model_copy(update={"images": {sif.key: sif.reference}}).save(
        "corsika-grid", overwrite=True
    )
    done = _run("corsika-grid", runs=2, first_run=30, experiment="KM3NeT")
    assert done.image == sif.reference and not done.image_built
    assert [r.run for r in done.simulated] == [30, 31]
    _check_archived(done)
