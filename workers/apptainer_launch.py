"""Started by the apptainer worker for each flow run: `apptainer exec` of the runtime image.

Standard library only (runs as `python -I` before anything is imported): the flow run's
variables become APPTAINERENV_* (never arguments), the working folder is bound at its own
path, and `timeout` enforces the wall time on the whole process group, worker or not. It
stays the container's parent, relaying its output, so a run outlives its worker.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
from typing import Any

LAUNCH_VARIABLE = "ESAP_APPTAINER_LAUNCH"
# The host's paths and the worker's own settings stay on the host: the image has its own.
KEPT_OUT = (
    "ESAP_APPTAINER_",
    "ESAP_PREFECT_HOME",
    "PREFECT_HOME",
    "PREFECT_PROFILES_PATH",
    "PREFECT_LOCAL_STORAGE_PATH",
    "PREFECT_SERVER_",
    "PREFECT_API_DATABASE_",
    "PREFECT_LOGGING_CONFIG_PATH",
    "PREFECT_MEMO_STORE_PATH",
    "PREFECT_UI_",
)
PASSED = ("PREFECT_", "ESAP_")


def container_env(environ: dict[str, str], extra: list[str], home: str | None) -> dict[str, str]:
    """The flow run's variables for the container: Prefect's, esap-prefect's, the job's own.

    With the worker's home shared, the homes under it stay (archive and job folders land
    on the host); otherwise the image's own apply.
    """
    chosen = {
        name: value
        for name, value in environ.items()
        if (name.startswith(PASSED) or name in extra) and not name.startswith(KEPT_OUT)
    }
    if home:
        for name in ("ESAP_PREFECT_HOME", "PREFECT_HOME"):
            value = environ.get(name, "")
            if value == home or value.startswith(home.rstrip("/") + "/"):
                chosen[name] = value
        chosen.setdefault("ESAP_PREFECT_HOME", home)
    return {f"APPTAINERENV_{name}": value for name, value in chosen.items()}


def command(launch: dict[str, Any], cwd: str) -> list[str]:
    """`[timeout ...] apptainer exec --containall --bind cwd --pwd cwd IMAGE prefect ...`."""
    home = launch.get("home")
    binds = [f"{cwd}:{cwd}", *([f"{home}:{home}"] if home else [])]
    binds += [str(b) for b in launch.get("binds") or []]
    argv = [str(launch["singularity"]), "exec", "--containall"]
    for bind in binds:
        argv += ["--bind", bind]
    argv += ["--pwd", cwd, str(launch["image"]), *[str(a) for a in launch["command"]]]
    walltime = launch.get("walltime")
    if walltime:
        timeout = shutil.which("timeout") or "/usr/bin/timeout"
        # --foreground: stay in the launcher's group, which the worker's kill stops
        argv = [timeout, "--foreground", "--kill-after=10", str(int(walltime)), *argv]
    return argv


def start_time(pid: int) -> int:
    """When the process started, in clock ticks since boot (tells a reused pid apart)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[19])


def note(records: str, flow_run_id: str) -> None:
    """Write `<records>/<flow run id>.json` = this pid and its start time, for later workers."""
    os.makedirs(records, mode=0o700, exist_ok=True)
    path = os.path.join(records, f"{flow_run_id}.json")
    with open(f"{path}.part", "w") as out:
        json.dump({"pid": os.getpid(), "start": start_time(os.getpid())}, out)
    os.replace(f"{path}.part", path)


def main() -> None:
    launch = json.loads(os.environ[LAUNCH_VARIABLE])
    environ = {k: v for k, v in os.environ.items() if not k.startswith("APPTAINERENV_")}
    environ.update(container_env(dict(os.environ), list(launch.get("env", [])), launch.get("home")))
    argv = command(launch, os.getcwd())
    if os.getpgid(0) != os.getpid():
        os.setsid()  # the run's own process group: the worker's kill and `timeout` stop at it
    if launch.get("records") and os.environ.get("PREFECT__FLOW_RUN_ID"):
        note(str(launch["records"]), os.environ["PREFECT__FLOW_RUN_ID"])
    child = subprocess.Popen(
        argv,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,  # noqa: PLW1509  (the launcher starts no thread)
    )
    # Prefect stops a run by signalling its pid (TERM, then KILL): hand TERM and INT to the
    # container and stay until it has ended; a KILL takes the container along (above)
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda received, _: child.send_signal(received))
    relay(child)
    code = child.wait()
    if code < 0:  # end as the container ended: by the same signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the launcher dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def relay(child: subprocess.Popen[bytes]) -> None:
    """Copy the container's output to ours (the worker's pipe) until it ends.

    If the worker is gone (its pipe broken), the rest is dropped rather than failing the
    run: its logs reach the Prefect API anyway.
    """
    assert child.stdout is not None
    alive = True
    for chunk in iter(lambda: os.read(child.stdout.fileno(), 65536), b""):  # type: ignore[union-attr]
        if alive:
            try:
                os.write(1, chunk)
            except OSError:
                alive = False


if __name__ == "__main__":
    main()
