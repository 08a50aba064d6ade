"""The esap-prefect runtime image for the Docker and Apptainer pools, built here from recipes.

A Debian base is made with debootstrap (no registry is needed), the recipes in
`containers/runtime/` add the project's wheel and its locked dependencies; a recipe key
(recipes, lock, wheel, base) decides whether an image already built can be reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import docker
import docker.errors

from blocks.apptainer import ApptainerFacility
from blocks.images import (
    base_image,
    base_key,
    base_root,
    docker_build,
    docker_engine,
    images_cache,
    sif_digest,
    trust_store,
)
from core.errors import FatalError
from core.files import write_json

RUNTIME = "esap-prefect/runtime"
LABEL_KEY = "org.esap-prefect.recipe-key"
RECORD = "runtime-images.json"
CA_BUNDLE = "ca-certificates.crt"
Engine = Literal["docker", "apptainer"]


@dataclass(frozen=True)
class BuiltImage:
    """One runtime image: where it is, its digest, the recipe key it was built from."""

    engine: Engine
    reference: str
    digest: str
    key: str
    version: str
    reused: bool
    seconds: float


@dataclass(frozen=True)
class Context:
    """The build context: the wheel, the lock and uv, and the keys naming what they make."""

    folder: Path
    wheel: str
    version: str
    lock_digest: str
    key: str

    @property
    def tag(self) -> str:
        """`esap-prefect/runtime:<version>-<lock digest>`."""
        return f"{RUNTIME}:{self.version}-{self.lock_digest[:12]}"

    @property
    def sif_name(self) -> str:
        return f"esap-prefect-runtime-{self.version}-{self.lock_digest[:12]}.sif"

    def build_args(self, base: str) -> dict[str, str]:
        return {
            "BASE": base,
            "WHEEL": self.wheel,
            "VERSION": self.version,
            "LOCK_DIGEST": self.lock_digest,
            "RECIPE_KEY": self.key,
        }


def default_cache() -> Path:
    """Where the base root, the build context and the SIFs live (see `images_cache`)."""
    return images_cache()


def is_runtime(image: str) -> bool:
    """Whether `image` names a runtime image this module builds (a tag or a SIF)."""
    name = Path(image).name
    return image.startswith(f"{RUNTIME}:") or (
        name.startswith("esap-prefect-runtime-") and name.endswith(".sif")
    )


def recipe(name: str) -> Path:
    """A file of the runtime recipes, wherever the package is installed."""
    path = Path(str(resources.files("containers") / "runtime" / name))
    if not path.is_file():
        raise FatalError(f"the runtime recipe {name} is missing from {path.parent}")
    return path


def source_tree() -> Path | None:
    """The clone the project runs from (an editable install), or None for an installed wheel."""
    root = Path(str(resources.files("containers"))).parent
    return root if (root / "pyproject.toml").is_file() and (root / ".git").exists() else None


def _uv() -> Path:
    found = Path(sys.executable).parent / "uv"
    if found.is_file():
        return found
    which = shutil.which("uv")
    if which is None:
        raise FatalError("uv is needed to build the runtime image: pip install uv")
    return Path(which)


def _digest_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wheel_digest(wheel: Path) -> str:
    """The wheel's content (names and bytes), not its zip timestamps."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0" + archive.read(name))
    return digest.hexdigest()


def prepare(cache: Path, wheel: Path | None = None, lock: Path | None = None) -> Context:
    """Gather the build context under `cache`: the wheel (built from the clone if not given).

    Raises:
        FatalError: no wheel given outside a clone, no lock, or the wheel build failed.
    """
    tree = source_tree()
    if lock is None and tree is not None:
        lock = tree / "requirements.lock"
    if lock is None or not lock.is_file():
        raise FatalError("no requirements.lock: give --lock (the lock of the release you install)")
    folder = cache / "context"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if wheel is None:
        if tree is None:
            raise FatalError("not running from a clone: give --wheel (the esap-prefect wheel)")
        built = subprocess.run(
            [str(_uv()), "build", "--wheel", "--quiet", "--out-dir", str(folder), str(tree)],
            capture_output=True,
            text=True,
            check=False,
        )
        if built.returncode != 0:
            raise FatalError(f"building the wheel failed: {built.stderr.strip()[-500:]}")
        [wheel] = folder.glob("esap_prefect-*.whl")
    elif not (wheel.is_file() and wheel.name.startswith("esap_prefect-")):
        raise FatalError(f"{wheel} is not an esap-prefect wheel file")
    else:
        shutil.copy2(wheel, folder / wheel.name)
    shutil.copy2(lock, folder / "requirements.lock")
    shutil.copy2(trust_store(), folder / CA_BUNDLE)
    shutil.copy2(_uv(), folder / "uv")
    version = wheel.name.split("-")[1]
    lock_digest = _digest_file(lock)
    parts = [
        _digest_file(recipe("Dockerfile")),
        _digest_file(recipe("esap-prefect.def")),
        lock_digest,
        _wheel_digest(folder / wheel.name),
        base_key(),
    ]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()
    return Context(folder, wheel.name, version, lock_digest, key)


def build_docker(context: Context, cache: Path, docker_url: str | None = None) -> BuiltImage:
    """The runtime image in the Docker Engine, reused when its recipe key is unchanged.

    Raises:
        FatalError: no engine answers, or the build failed (with the build's last lines).
    """
    started = time.monotonic()
    with contextlib.closing(docker_engine(docker_url)) as client:
        with contextlib.suppress(docker.errors.ImageNotFound):
            image = client.images.get(context.tag)
            if (image.labels or {}).get(LABEL_KEY) == context.key:
                return _built("docker", context, context.tag, image.id, True, started)
        base = base_image(client, cache)
        shutil.copy2(recipe("Dockerfile"), context.folder / "Dockerfile")
        image_id = docker_build(client, context.folder, context.tag, context.build_args(base))
        return _built("docker", context, context.tag, image_id, False, started)


def build_apptainer(context: Context, cache: Path, singularity: str) -> BuiltImage:
    """The runtime SIF under `cache`, reused when its labels carry the same recipe key.

    Raises:
        FatalError: the command is missing, or the build failed.
    """
    started = time.monotonic()
    facility = ApptainerFacility(singularity=singularity, image_cache=cache)
    target = cache / context.sif_name
    if target.exists():
        with contextlib.suppress(FatalError):
            if facility.image_labels(str(target)).get(LABEL_KEY) == context.key:
                return _built("apptainer", context, str(target), sif_digest(target), True, started)
    base = base_root(cache)
    partial = target.with_name(target.stem + ".partial.sif")
    arguments = {**context.build_args(str(base)), "CONTEXT": str(context.folder)}
    facility.build_image(recipe("esap-prefect.def"), partial, arguments)
    partial.replace(target)
    return _built("apptainer", context, str(target), sif_digest(target), False, started)


def _built(
    engine: Engine, context: Context, reference: str, digest: str, reused: bool, started: float
) -> BuiltImage:
    return BuiltImage(
        engine, reference, digest, context.key, context.version, reused, time.monotonic() - started
    )


def record(cache: Path, images: list[BuiltImage]) -> Path:
    """Note the images in `<cache>/runtime-images.json` (what the pools default to)."""
    path = cache / RECORD
    known = recorded(cache)
    known.update({image.engine: image for image in images})
    write_json(path, {engine: asdict(image) for engine, image in known.items()})
    return path


def recorded(cache: Path) -> dict[str, BuiltImage]:
    """The runtime images last built with this cache, by engine."""
    path = cache / RECORD
    if not path.is_file():
        return {}
    try:
        return {k: BuiltImage(**v) for k, v in json.loads(path.read_text()).items()}
    except (ValueError, TypeError):
        return {}


def check_docker_image(image: str, docker_url: str | None = None) -> None:
    """The image is in the Docker Engine the docker worker will use.

    Raises:
        FatalError: no engine answers, or it lacks the image (and how to build it).
    """
    with contextlib.closing(docker_engine(docker_url)) as client:
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise FatalError(
                f"the Docker Engine has no image {image}: run `esap-prefect images build --docker`"
            ) from None
