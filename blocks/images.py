"""The base of every image this project builds: a Debian root made with debootstrap.

The same root imported into Docker; the host's trust store and proxies for builds' downloads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import docker
import docker.errors

from core.errors import FatalError
from core.settings import home

SUITE = "bookworm"
BASE_PACKAGES = ("python3", "ca-certificates")
MIRROR_VARIABLE = "ESAP_PREFECT_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE = "esap-prefect/base"
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
CACHE_VARIABLE = "ESAP_PREFECT_IMAGES"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def trust_store() -> Path:
    """The host's CA bundle, used only while the build downloads (sites behind TLS proxies).

    Raises:
        FatalError: $SSL_CERT_FILE names no file and the system bundle is missing.
    """
    path = Path(os.environ.get("SSL_CERT_FILE") or SYSTEM_CA_BUNDLE)
    if not path.is_file():
        raise FatalError(f"no CA bundle at {path}: set SSL_CERT_FILE or install ca-certificates")
    return path


def base_key() -> str:
    """What the base is made of: suite and packages (the mirror does not change it)."""
    return hashlib.sha256(f"{SUITE} {' '.join(BASE_PACKAGES)}".encode()).hexdigest()


def base_root(cache: Path) -> Path:
    """Debian's minimal root with Python, made once with debootstrap (about a minute).

    Raises:
        FatalError: debootstrap is missing or failed.
    """
    root = cache / f"base-{SUITE}-{base_key()[:12]}"
    if (root / ".esap-ready").exists():
        return root
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise FatalError("debootstrap is needed to build the base: apt-get install debootstrap")
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            SUITE,
            str(root),
            os.environ.get(MIRROR_VARIABLE, DEFAULT_MIRROR),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = " | ".join(done.stdout.strip().splitlines()[-3:])
        raise FatalError(f"debootstrap {SUITE} failed: {tail}")
    for cached in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        cached.unlink()
    # device nodes: engines mount their own /dev, and a rootless build cannot copy them
    shutil.rmtree(root / "dev")
    (root / "dev").mkdir()
    (root / ".esap-ready").touch()
    return root


def docker_engine(docker_url: str | None) -> docker.DockerClient:
    try:
        client = docker.DockerClient(base_url=docker_url) if docker_url else docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        where = docker_url or os.environ.get("DOCKER_HOST", "the default socket")
        raise FatalError(f"no Docker Engine answers at {where}: {exc}") from None
    return client


def base_image(client: docker.DockerClient, cache: Path) -> str:
    tag = f"{BASE}:{SUITE}-{base_key()[:12]}"
    with contextlib.suppress(docker.errors.ImageNotFound):
        client.images.get(tag)
        return tag
    root = base_root(cache)
    with tempfile.TemporaryFile(dir=cache) as archive:
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(root, arcname=".", filter=lambda m: None if m.name == "./.esap-ready" else m)
        archive.seek(0)
        repository, _, version = tag.partition(":")
        client.api.import_image_from_data(archive, repository=repository, tag=version)
    return tag


def build_proxies() -> dict[str, str]:
    """The host's proxy settings, which Docker passes to the build's steps only."""
    return {name: os.environ[name] for name in PROXY_VARIABLES if os.environ.get(name)}


def sif_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def images_cache() -> Path:
    """Where bases, build contexts and SIFs live: $ESAP_PREFECT_IMAGES, or <home>/images."""
    configured = os.environ.get(CACHE_VARIABLE)
    return Path(configured).expanduser() if configured else home() / "images"


def docker_build(
    client: docker.DockerClient, folder: Path, tag: str, arguments: dict[str, str]
) -> str:
    """Build `folder` (its Dockerfile) as `tag` with the host's proxies; the image's id.

    Raises:
        FatalError: the build failed, with its last lines.
    """
    try:
        image, _ = client.images.build(
            path=str(folder),
            tag=tag,
            buildargs={**arguments, **build_proxies()},
            network_mode="host",
            rm=True,
            forcerm=True,
        )
    except docker.errors.BuildError as exc:
        lines = [str(step.get("stream", "")).strip() for step in exc.build_log]
        tail = " | ".join(line for line in lines if line)[-600:]
        raise FatalError(f"building {tag} failed: {exc.msg}: {tail}") from None
    return str(image.id)
