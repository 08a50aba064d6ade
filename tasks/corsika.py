"""The CORSIKA image of a run's build configuration on its facility, as a Prefect task.

Selected when it exists, built once otherwise; an explicit image is used as it is.
"""

from __future__ import annotations

from prefect import get_run_logger, task

from blocks.corsika import CorsikaImage, CorsikaSource, select_or_build
from blocks.registry import load_facility
from core.corsika import BuildConfig

DEFAULT_SOURCE = "default"


def _source(name: str | None) -> CorsikaSource | None:
    """The saved CORSIKA source, None when none is (a build then says what to save)."""
    try:
        loaded = CorsikaSource.load(name or DEFAULT_SOURCE)
    except ValueError:
        if name:
            raise
        return None
    assert isinstance(loaded, CorsikaSource)
    return loaded


@task(name="corsika-image", task_run_name="corsika-image on {facility}")
def corsika_image(
    facility: str, build: BuildConfig, image: str | None, source: str | None
) -> CorsikaImage:
    """The image runs of `build` use on `facility` (found, or built and recorded)."""
    logger = get_run_logger()
    if image is not None:
        logger.info("using the image given, %s, as it is", image)
        return CorsikaImage("", image, "", build.executable, False, 0.0)
    found = select_or_build(load_facility(facility), build, _source(source))
    verb = "built" if found.built else "selected"
    logger.info(
        "%s %s for %s (key %s, digest %s) in %.1f s",
        verb,
        found.reference,
        build.executable,
        found.key,
        found.digest or "listed by the facility",
        found.seconds,
    )
    return found
