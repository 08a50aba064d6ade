"""The Apptainer (Singularity) facility: local jobs run inside SIF images with `apptainer exec`.

It is the local facility's runner (wall time, cancel, take-over) with each command wrapped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from blocks import outbound
from blocks.local import LocalFacility
from core.errors import FatalError, TransientError
from core.files import atomic_file
from core.jobs import JobSpec
from planner.models import TaskType

PULLED_SCHEMES = ("https", "http", "docker", "oras", "library", "shub")
SIF_MAGIC = b"SIF_MAGIC"
_PATH_LOCK = threading.Lock()


def is_sif(path: Path) -> bool:
    """Whether `path` is a regular file starting as a SIF image does (launch line, magic)."""
    try:
        if not path.is_file():
            return False
        with path.open("rb") as handle:
            return handle.read(64)[32:41] == SIF_MAGIC
    except OSError:
        return False


class ApptainerFacility(LocalFacility):
    """Runs payload jobs in Apptainer/Singularity containers on the host of the flow run.

    Images are SIF files on the host or URIs (`https://`, `oras://`, `docker://`, ...)
    pulled once into the facility's image cache. Jobs run with `--containall`: a clean
    environment (the job's variables are passed as APPTAINERENV_*), their working
    directory bound at the same path and used as the current directory.

    Example:
        ```python
        from blocks import ApptainerFacility

        facility = ApptainerFacility.load("apptainer")  # this block, in your code
        ApptainerFacility(singularity="/usr/bin/apptainer").save("other-host")  # another
        ```
    """

    _block_type_name = "Apptainer Facility"
    _description = "Runs ESAP payload jobs in Apptainer/Singularity containers on this host."

    tasktypes: ClassVar[frozenset[TaskType]] = frozenset({TaskType.SINGULARITY})
    servicetype: ClassVar[str] = "uri://esap-prefect/apptainer"

    kind: ClassVar[str] = "apptainer"
    runtime_engine: ClassVar[str] = "Singularity"
    singularity: str = Field(
        default="singularity",
        description="The apptainer (or singularity) command: a name on PATH or a path.",
    )
    image_cache: Path | None = Field(
        default=None, description="Where pulled images are kept; default <workdir>/.images."
    )
    pull_timeout: float = Field(default=600, gt=0, description="Seconds one image pull may take.")

    def check(self, spec: JobSpec) -> None:
        """The common checks, and the image found (or pulled) before anything is submitted."""
        super().check(spec)
        assert spec.image is not None
        self.local_image(spec.image)

    def image_cache_dir(self) -> Path:
        cache = (self.image_cache or self._root() / ".images").expanduser().resolve()
        cache.mkdir(parents=True, exist_ok=True)
        return cache

    def local_image(self, image: str) -> Path:
        """The SIF file of `image`: the file itself, or the pulled copy of a URI.

        Raises:
            FatalError: the file does not exist, the scheme is unknown or the pull failed.
        """
        scheme, sep, _ = image.partition("://")
        if not sep:
            path = Path(image)
            if not (path.is_absolute() and is_sif(path)):
                # one answer for missing, unreadable and not-an-image: it may reach users
                raise FatalError(
                    f"image {image} is not a SIF image file on facility {self.facility_name} "
                    f"(give an absolute path to one, or a URI: {', '.join(PULLED_SCHEMES)})"
                )
            return path
        if scheme not in PULLED_SCHEMES:
            raise FatalError(
                f"image {image}: scheme {scheme} is not one of {', '.join(PULLED_SCHEMES)}"
            )
        target = self.image_cache_dir() / f"{hashlib.sha256(image.encode()).hexdigest()[:32]}.sif"
        if target.exists():
            return target
        partial = target.with_name(target.stem + ".partial.sif")
        if scheme in ("http", "https"):  # a SIF file at a URL: brought by the guarded client
            return self._download(image, partial, target)
        registry = _registry(image, scheme)
        if registry:
            try:
                outbound.check_host(f"https://{registry}/")
            except outbound.Refused:
                raise FatalError(
                    f"image {image} cannot be pulled: its registry is not a public address"
                ) from None
        try:
            done = subprocess.run(
                [self.singularity, "pull", "--force", str(partial), image],
                capture_output=True,
                text=True,
                timeout=self.pull_timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FatalError(f"pulling image {image} failed: {exc}") from None
        if done.returncode != 0:
            tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
            raise FatalError(f"pulling image {image} failed: {tail}")
        partial.replace(target)
        return target

    def _download(self, image: str, partial: Path, target: Path) -> Path:
        try:
            with atomic_file(partial) as out:
                outbound.fetch(image, out)
        except (FatalError, TransientError) as exc:
            raise FatalError(f"image {exc}") from None
        if not is_sif(partial):
            partial.unlink()
            raise FatalError(f"image {image} is not a SIF image file")
        partial.replace(target)
        return target

    def _job_env(self, spec: JobSpec, directory: Path) -> dict[str, str]:
        env = super()._job_env(spec, directory)
        inside = {**spec.env, "ESAP_JOB_NAME": spec.name, "ESAP_JOB_DIR": str(directory)}
        env.update({f"APPTAINERENV_{key}": value for key, value in inside.items()})
        return env

    def _command(self, spec: JobSpec, directory: Path) -> list[str]:
        assert spec.image is not None
        image = str(self.local_image(spec.image))
        options = ["--containall", "--bind", f"{directory}:{directory}", "--pwd", str(directory)]
        if spec.executable:
            return [self.singularity, "exec", *options, image, spec.executable, *spec.arguments]
        return [self.singularity, "run", *options, image, *spec.arguments]

    @contextlib.contextmanager
    def _spython(self) -> Iterator[Any]:
        """Spython's client, running this facility's command (spython calls `singularity`)."""
        from spython.main import get_client

        command = shutil.which(self.singularity)
        if command is None:
            raise FatalError(f"{self.singularity} is not an executable command on this host")
        shims = self.image_cache_dir() / ".spython-bin"
        shims.mkdir(exist_ok=True)
        link = shims / "singularity"
        if not link.is_symlink() or os.readlink(link) != command:
            link.unlink(missing_ok=True)
            link.symlink_to(command)
        with _PATH_LOCK:
            path = os.environ.get("PATH", os.defpath)
            os.environ["PATH"] = f"{shims}{os.pathsep}{path}"
            try:
                yield get_client(quiet=True)
            except SystemExit as exc:  # spython exits the process on a failed command
                raise FatalError(f"{self.singularity} failed: {exc}") from None
            finally:
                os.environ["PATH"] = path

    def version(self) -> str:
        """The Apptainer/Singularity version the facility's command reports (spython)."""
        with self._spython() as client:
            version = str(client.version() or "")
        if not version:
            raise FatalError(f"{self.singularity} --version gave no version")
        return version

    def build_image(self, definition: Path, target: Path, arguments: dict[str, str]) -> Path:
        """Build a SIF from a definition file with `--build-arg`s (spython, no sudo).

        The build's own output goes to this process's terminal, as `apptainer build` writes it.

        Raises:
            FatalError: the build did not make an image.
        """
        options = [
            part for key, value in arguments.items() for part in ("--build-arg", f"{key}={value}")
        ]
        with self._spython() as client:
            client.build(
                recipe=str(definition), image=str(target), sudo=False, force=True, options=options
            )
        if not is_sif(target):
            raise FatalError(
                f"{self.singularity} build of {definition.name} made no image "
                "(its output, above, says why)"
            )
        return target

    def image_labels(self, image: str) -> dict[str, str]:
        """The labels of an image (its build options, its recipe's digest), read by spython."""
        path = self.local_image(image)
        with self._spython() as client:
            found = client.inspect(str(path), quiet=True)
        labels = found.get("attributes", {}).get("labels") if isinstance(found, dict) else None
        if not isinstance(labels, dict):
            raise FatalError(f"image {image} could not be inspected")
        return {str(k): str(v) for k, v in labels.items()}


def _registry(image: str, scheme: str) -> str | None:
    """The registry host of a docker:// or oras:// reference, if it names one."""
    if scheme not in ("docker", "oras"):
        return None
    parts = image.split("://", 1)[1].lstrip("/").split("/", 1)
    if len(parts) == 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        return parts[0]
    return None
