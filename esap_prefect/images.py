"""`esap-prefect images build`: the runtime images of the docker and apptainer pools.

One line per image: engine, reference, digest, built or reused; errors are one line, status 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

images_app = typer.Typer(help="Build the runtime images the docker and apptainer pools run.")


@images_app.command("build")
def build(
    docker: Annotated[bool, typer.Option("--docker", help="Build the Docker image.")] = False,
    apptainer: Annotated[
        bool, typer.Option("--apptainer", help="Build the Apptainer SIF.")
    ] = False,
    docker_url: Annotated[
        str | None, typer.Option(help="The Docker Engine (default: $DOCKER_HOST or the socket).")
    ] = None,
    singularity: Annotated[
        str, typer.Option(help="The apptainer/singularity command (a name on PATH or a path).")
    ] = "apptainer",
    wheel: Annotated[
        Path | None, typer.Option(help="The esap-prefect wheel (default: built from the clone).")
    ] = None,
    lock: Annotated[
        Path | None, typer.Option(help="The lock to pin dependencies (default: the clone's).")
    ] = None,
    cache: Annotated[
        Path | None, typer.Option(help="Base root, context and SIFs (default: <home>/images).")
    ] = None,
) -> None:
    """Build the runtime image(s), both engines unless one is named; reuse unchanged ones."""
    from core.errors import FatalError
    from deployments import runtime_image

    folder = (cache or runtime_image.default_cache()).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    engines = [e for e, chosen in (("docker", docker), ("apptainer", apptainer)) if chosen]
    try:
        context = runtime_image.prepare(folder, wheel, lock)
        for engine in engines or ["docker", "apptainer"]:
            if engine == "docker":
                image = runtime_image.build_docker(context, folder, docker_url)
            else:
                image = runtime_image.build_apptainer(context, folder, singularity)
            runtime_image.record(folder, [image])
            how = "reused" if image.reused else f"built in {image.seconds:.0f} s"
            typer.echo(f"{image.engine:<10} {image.reference}  {image.digest[:19]}  {how}")
    except FatalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
