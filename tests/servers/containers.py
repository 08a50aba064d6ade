"""Real container runtimes for the tests: a private Docker Engine and Apptainer from Debian sid.

Images are built here from Debian's busybox-static (no registry is reachable).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import docker

from tests.servers.venvs import CACHE

APPTAINER_ROOT = CACHE / "apptainer" / "root"
APPLETS = (
    "sh",
    "echo",
    "cat",
    "ls",
    "env",
    "id",
    "sleep",
    "mkdir",
    "wc",
    "printenv",
    "pwd",
    "ln",
    "mkfifo",
)

# What the test images run when no command is given: greet, list the inputs, write a file.
PAYLOAD = """#!/bin/sh
set -e
sleep "${PAUSE:-0}"
mkdir -p outputs
echo "hello from $ESAP_JOB_NAME: ${GREETING:-nobody} $*" | tee outputs/greeting.txt
pwd >> outputs/greeting.txt
"""


def need(program: str, package: str) -> str:
    """The path of `program`, or an error saying which Debian package provides it."""
    found = shutil.which(program) or (
        f"/usr/sbin/{program}" if Path(f"/usr/sbin/{program}").exists() else None
    )
    if found is None:
        raise RuntimeError(f"{program} not found: apt-get install {package} (.ci/run does)")
    return found


def busybox_rootfs(target: Path) -> Path:
    """A minimal root file system: Debian's static busybox, a few applets, the payload."""
    busybox = need("busybox", "busybox-static")
    (target / "bin").mkdir(parents=True, exist_ok=True)
    for folder in ("tmp", "proc", "sys", "dev", "etc"):
        (target / folder).mkdir(exist_ok=True)
    shutil.copy2(busybox, target / "bin" / "busybox")
    for applet in APPLETS:
        link = target / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    payload = target / "payload.sh"
    payload.write_text(PAYLOAD)
    payload.chmod(0o755)
    return target


class DockerEngine:
    """dockerd on a private socket and data root, no bridge, no iptables; with `live-restore`
    (as production engines should be): containers outlive a restart of the daemon."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the engine and wait until it answers."""
        dockerd = need("dockerd", "docker.io")
        self.root.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(
            [
                dockerd,
                "--host",
                self.url,
                "--data-root",
                str(self.root / "data"),
                "--exec-root",
                str(self.root / "exec"),
                "--pidfile",
                str(self.root / "docker.pid"),
                "--iptables=false",
                "--bridge=none",
                "--storage-driver=overlay2",
                "--live-restore",
            ],
            stdout=(self.root / "dockerd.log").open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                log = (self.root / "dockerd.log").read_text()[-2000:]
                raise RuntimeError(f"dockerd exited: {log}")
            try:
                with contextlib.closing(docker.DockerClient(base_url=self.url)) as client:
                    client.ping()
                    return
            except docker.errors.DockerException:
                time.sleep(0.2)
        raise RuntimeError("dockerd did not answer within 60 s")

    def stop_daemon(self) -> None:
        """Stop dockerd alone, as an operator's restart does: running containers carry on."""
        assert self._process is not None
        self._process.terminate()
        self._process.wait(30)

    def client(self) -> docker.DockerClient:
        """A client of this engine."""
        return docker.DockerClient(base_url=self.url)

    def build_image(self, tag: str, work: Path) -> str:
        """The busybox base imported, then a `docker build` FROM it whose CMD is the payload."""
        rootfs = busybox_rootfs(work / "rootfs")
        archive = work / "rootfs.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(rootfs, arcname=".")
        with contextlib.closing(self.client()) as client, archive.open("rb") as data:
            client.api.import_image_from_data(data.read(), repository="esap-test/busybox", tag="1")
        (work / "Dockerfile").write_text(
            'FROM esap-test/busybox:1\nENTRYPOINT ["/payload.sh"]\nLABEL org.esap.test="yes"\n'
        )
        with contextlib.closing(self.client()) as client:
            image, _ = client.images.build(path=str(work), tag=tag, rm=True)
            return str(image.id)

    def stop(self) -> None:
        """Stop the engine (SIGTERM, then SIGKILL) and every container it ran."""
        if self._process is None:
            return
        with contextlib.closing(self.client()) as client:
            for container in client.containers.list(all=True):
                container.remove(force=True)
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        # dockerd leaves its network namespace, and (live-restore) its data root, mounted:
        # pytest could not remove them
        inside = f"{self.root}/"
        points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
        for point in sorted((p for p in points if p.startswith(inside)), reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


SHIM = """#!/bin/sh
# singularity: Debian sid's apptainer, run in a private mount namespace rooted at {root}
# (Debian 12 has no apptainer; a plain chroot is refused, so pivot_root).
exec unshare -m --propagation private sh -c '
root=$1; here=$2; shift 2
mount --bind "$root" "$root"
for d in /proc /sys /dev {binds}; do mkdir -p "$root$d"; mount --rbind "$d" "$root$d"; done
cd "$root"; mkdir -p .oldroot; pivot_root . .oldroot; umount -l /.oldroot
cd "$here"
# a user namespace mapping 65536 ids (root maps root), so builds can own files as any id
exec unshare -U --map-users=0:0:65536 --map-groups=0:0:65536 apptainer "$@"
' singularity {root} "$PWD" "$@"
"""


def apptainer_root() -> Path:
    """Debian sid with apptainer, under the project's cache (built once, about 40 s).

    squashfuse lets it run SIF images in place (without, each start unpacks the image: ~10 s).
    """
    done = APPTAINER_ROOT / ".esap-ready-2"
    if done.exists():
        return APPTAINER_ROOT
    shutil.rmtree(APPTAINER_ROOT, ignore_errors=True)
    APPTAINER_ROOT.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            need("debootstrap", "debootstrap"),
            "--variant=minbase",
            "sid",
            str(APPTAINER_ROOT),
            "http://deb.debian.org/debian",
        ],
        check=True,
        capture_output=True,
    )
    # sid's Release file may be past its Valid-Until on a machine with a late clock
    apt = "apt-get -q -o Acquire::Check-Valid-Until=false"
    subprocess.run(
        [
            "chroot",
            str(APPTAINER_ROOT),
            "sh",
            "-c",
            f"{apt} update && DEBIAN_FRONTEND=noninteractive {apt} install -y "
            "--no-install-recommends apptainer squashfuse fuse2fs",
        ],
        check=True,
        capture_output=True,
    )
    shutil.copy2("/etc/hosts", APPTAINER_ROOT / "etc" / "hosts")
    done.touch()
    return APPTAINER_ROOT


def singularity_shim(bin_dir: Path, binds: list[Path]) -> Path:
    """A `singularity` command running the sid apptainer with `binds` visible at their paths."""
    root = apptainer_root()
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "singularity"
    shim.write_text(SHIM.format(root=root, binds=" ".join(str(b) for b in binds)))
    shim.chmod(0o755)
    return shim


def build_sif(singularity: Path, target: Path, work: Path) -> Path:
    """A SIF image of the busybox root file system whose runscript is the payload."""
    rootfs = busybox_rootfs(work / "sif-rootfs")
    runscript = rootfs / ".singularity.d" / "runscript"
    runscript.parent.mkdir(exist_ok=True)
    runscript.write_text('#!/bin/sh\nexec /payload.sh "$@"\n')
    runscript.chmod(0o755)
    subprocess.run(
        [str(singularity), "build", "--force", str(target), str(rootfs)],
        check=True,
        capture_output=True,
        cwd=work,
    )
    return target


IMAGES = CACHE / "images"


def build_runtime_images(
    engine: DockerEngine, singularity: Path
) -> subprocess.CompletedProcess[str]:
    """`esap-prefect images build` for both engines, cached under `.cache/images`."""
    cli = Path(sys.executable).parent / "esap-prefect"
    engines = ["--docker-url", engine.url, "--singularity", str(singularity)]
    return subprocess.run(
        [str(cli), "images", "build", *engines, "--cache", str(IMAGES)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
