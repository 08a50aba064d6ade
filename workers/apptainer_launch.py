"""Started by the apptainer worker for each flow run: `apptainer exec` of the runtime image.

Standard library only (runs as `python -I` before anything is imported): the flow run's
variables become APPTAINERENV_* (never arguments), the working folder is bound at its own
path, and `timeout` enforces the wall time on the whole process group, worker or not.
"""

from __future__ import annotations

import json
import os
import shutil
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
        argv = [timeout, "--kill-after=10", str(int(walltime)), *argv]
    return argv


def main() -> None:
    launch = json.loads(os.environ[LAUNCH_VARIABLE])
    environ = {k: v for k, v in os.environ.items() if not k.startswith("APPTAINERENV_")}
    environ.update(container_env(dict(os.environ), list(launch.get("env", [])), launch.get("home")))
    argv = command(launch, os.getcwd())
    if os.getpgid(0) != os.getpid():
        os.setsid()  # the run's own process group: the worker's kill and `timeout` stop at it
    os.execvpe(argv[0], argv, environ)


if __name__ == "__main__":
    main()
