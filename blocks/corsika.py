"""CORSIKA images for CONCORDIA: one per build configuration, selected if built, built if not.

Docker finds an image by its key label, Apptainer a SIF in its image cache, DIRAC a location its
facility block lists per key (as CVMFS serves images to grid nodes); DIRAC cannot build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from prefect.blocks.core import Block
from pydantic import Field, field_validator

from blocks.apptainer import ApptainerFacility
from blocks.dirac.facility import DiracFacility
from blocks.docker import DockerFacility
from blocks.facility import FacilityBlock
from blocks.images import base_image, base_root, docker_build, images_cache, sif_digest
from core.corsika import BuildConfig
from core.errors import FatalError
from core.settings import home

KEY_LABEL = "org.esap-prefect.corsika-key"
REPOSITORY = "esap-prefect/corsika"
RECIPES = ("Dockerfile", "corsika.def", "build-corsika.sh")
_TARBALL = re.compile(r"^corsika-(\d{5})\.tar\.gz$")
LOCK_WAIT = 3600.0
"""Longest a run waits for another run's build of the same configuration."""


class CorsikaSource(Block):
    """The CORSIKA source tarball the operator is licensed for, and what building it needs.

    CORSIKA is licensed: it is never in the repository and never downloaded by esap-prefect.

    Example:
        ```python
        from blocks.corsika import CorsikaSource

        CorsikaSource(tarball="/data/corsika-77550.tar.gz",
                      build_packages=["gfortran", "gcc", "g++", "make"]).save("default")
        ```
    """

    _block_type_name = "CORSIKA Source"
    _description = "The CORSIKA 7 source tarball CONCORDIA builds its images from."

    tarball: Path = Field(description="The source tarball, named corsika-<version>.tar.gz.")
    build_packages: list[str] = Field(
        default_factory=list,
        description="Debian packages the build needs (real CORSIKA: gfortran gcc g++ make).",
    )

    @field_validator("build_packages")
    @classmethod
    def _package_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]{0,63}", name):
                raise ValueError(f"{name!r} is not a Debian package name")
        return names

    @property
    def version(self) -> int:
        """The CORSIKA version the tarball's name gives (corsika-77550.tar.gz: 77550)."""
        match = _TARBALL.fullmatch(self.tarball.name)
        if match is None:
            raise FatalError(f"{self.tarball.name} is not named corsika-<5 digits>.tar.gz")
        return int(match.group(1))


@dataclass(frozen=True)
class CorsikaImage:
    """The image of one configuration on one facility, and whether this call built it."""

    key: str
    reference: str
    digest: str
    executable: str
    built: bool
    seconds: float


def recipe(name: str) -> Path:
    """A file of the CORSIKA recipes, wherever the package is installed."""
    path = Path(str(resources.files("containers") / "corsika" / name))
    if not path.is_file():
        raise FatalError(f"the CORSIKA recipe {name} is missing from {path.parent}")
    return path


def image_key(build: BuildConfig) -> str:
    """The configuration's key: its recipes and its build options."""
    digest = hashlib.sha256()
    for name in RECIPES:
        digest.update(recipe(name).read_bytes())
    return build.key(digest.hexdigest())


def select_or_build(
    facility: FacilityBlock, build: BuildConfig, source: CorsikaSource | None
) -> CorsikaImage:
    """The configuration's image on `facility`: found, or built once (runs wait for a build).

    Raises:
        FatalError: the facility runs no containers, DIRAC lists no image for the key, or a
            build is needed with no source configured, or it failed.
    """
    key = image_key(build)
    if isinstance(facility, DiracFacility):
        return _dirac(facility, build, key)
    if not isinstance(facility, DockerFacility | ApptainerFacility):
        raise FatalError(
            f"facility {facility.facility_name} ({facility.kind}) runs no containers: CONCORDIA "
            "runs on a Docker, Apptainer or DIRAC facility"
        )
    started = time.monotonic()
    found = _find(facility, key)
    if found is not None:
        return CorsikaImage(key, *found, build.executable, False, time.monotonic() - started)
    with _build_lock(key):
        found = _find(facility, key)  # another run may have built it while this one waited
        if found is not None:
            return CorsikaImage(key, *found, build.executable, False, time.monotonic() - started)
        if source is None:
            raise FatalError(
                f"no CORSIKA image for configuration {key} on {facility.facility_name} and no "
                "CORSIKA source is configured: save a CorsikaSource block (the licensed tarball)"
            )
        made = _build(facility, build, key, source)
    return CorsikaImage(key, *made, build.executable, True, time.monotonic() - started)


def _tag(build: BuildConfig, key: str) -> str:
    return f"{REPOSITORY}:{build.version}-{build.high_energy_model.short}-{key[:12]}"


def _sif(facility: ApptainerFacility, key: str) -> Path:
    return facility.image_cache_dir() / f"corsika-{key}.sif"


def _find(facility: DockerFacility | ApptainerFacility, key: str) -> tuple[str, str] | None:
    """(reference, digest) of the image labelled with `key`, if the facility has it."""
    if isinstance(facility, DockerFacility):
        with facility.engine() as client:
            images = client.images.list(filters={"label": f"{KEY_LABEL}={key}"})
            if not images:
                return None
            image = images[0]
            return (image.tags[0] if image.tags else str(image.id)), str(image.id)
    path = _sif(facility, key)
    if not path.is_file():
        return None
    with contextlib.suppress(FatalError):
        if facility.image_labels(str(path)).get(KEY_LABEL) == key:
            return str(path), sif_digest(path)
    return None


@contextlib.contextmanager
def _build_lock(key: str) -> Iterator[None]:
    """One build per configuration on this host: other runs wait for it, then select it."""
    folder = home() / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"corsika-{key}.lock").open("w") as handle:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FatalError(
                        f"another build of CORSIKA configuration {key} held its lock for over "
                        f"{LOCK_WAIT:.0f} s"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _arguments(build: BuildConfig, key: str, source: CorsikaSource) -> dict[str, str]:
    if source.version != build.version:
        raise FatalError(
            f"the configured CORSIKA source is version {source.version}; the run asks for "
            f"{build.version}"
        )
    if not source.tarball.is_file():
        raise FatalError(f"the CORSIKA source {source.tarball} is not a file")
    return {
        "SOURCE": source.tarball.name,
        "EXECUTABLE": build.executable,
        "VERSION": str(build.version),
        "HE": build.high_energy_model.value,
        "LE": build.low_energy_model.value,
        "OPTIONS": ",".join(o.value for o in build.options),
        "CPU": build.cpu.value,
        "KEY": key,
        "BUILD_PACKAGES": " ".join(source.build_packages),
    }


def _build(
    facility: DockerFacility | ApptainerFacility,
    build: BuildConfig,
    key: str,
    source: CorsikaSource,
) -> tuple[str, str]:
    arguments = _arguments(build, key, source)
    cache = images_cache()
    with tempfile.TemporaryDirectory(prefix="esap-corsika-") as tmp:
        context = Path(tmp)
        shutil.copy2(source.tarball, context / source.tarball.name)
        for name in RECIPES:
            shutil.copy2(recipe(name), context / name)
        if isinstance(facility, DockerFacility):
            tag = _tag(build, key)
            with facility.engine() as client:
                base = base_image(client, cache)
                image_id = docker_build(client, context, tag, {**arguments, "BASE": base})
            return tag, image_id
        target = _sif(facility, key)
        partial = target.with_name(target.stem + ".partial.sif")
        options = {**arguments, "BASE": str(base_root(cache)), "CONTEXT": str(context)}
        facility.build_image(context / "corsika.def", partial, options)
        partial.replace(target)
        return str(target), sif_digest(target)


def _dirac(facility: DiracFacility, build: BuildConfig, key: str) -> CorsikaImage:
    location = facility.images.get(key)
    if location is None:
        raise FatalError(
            f"DIRAC facility {facility.facility_name} lists no image for CORSIKA configuration "
            f"{key} ({build.executable}, version {build.version}); DIRAC cannot build: build it "
            "on an Apptainer facility, publish the SIF where the nodes read it (CVMFS) and add "
            f"it to the facility's images as {key}=<path>"
        )
    return CorsikaImage(key, location, "", build.executable, False, 0.0)
