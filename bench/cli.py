"""Command-line benchmark: how long `esap-prefect` takes to answer, beside Prefect's own CLI.

Read-only commands on a fresh home, on a home whose database exists (a temporary Prefect
server is started, as `prefect block ls` starts one), and with `esap-prefect up` running;
`--help` and a typo. Medians of ROUNDS, the two CLIs alternating, in one run.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from deployments.processes import free_port

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BIN = Path(sys.executable).parent
ESAP, PREFECT = str(BIN / "esap-prefect"), str(BIN / "prefect")


def environment(home: Path, api: str | None = None) -> dict[str, str]:
    """The environment a user has: a home, Prefect pointed at it (or at a running API)."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "ESAP_PREFECT_HOME": str(home),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }
    if api:
        env["PREFECT_API_URL"] = api
    return env


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 2):
        raise RuntimeError(f"{argv} failed: {done.stderr[-500:]}")
    return elapsed


def median(argv: list[str], env: dict[str, str]) -> float:
    return statistics.median(timed(argv, env) for _ in range(ROUNDS))


def row(what: str, ours: float, peer: float | None, peer_name: str = "") -> None:
    ratio = f"{ours / peer:6.2f}x" if peer else "      "
    theirs = f"{peer:8.2f} s  {peer_name}" if peer else ""
    print(f"{what:48} {ours:7.2f} s  {ratio}  {theirs}")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="esap-bench-cli-"))
    print(f"esap-prefect CLI vs prefect CLI, medians of {ROUNDS}, 2 cores")
    print(f"{'case':48} {'ours':>9}  {'ratio':>7}  peer")
    row("--help", median([ESAP, "--help"], environment(work / "h")),
        median([PREFECT, "--help"], environment(work / "h")), "prefect --help")  # fmt: skip
    row("a typo (exit 2)", median([ESAP, "wrokflows"], environment(work / "h")),
        median([PREFECT, "blcok"], environment(work / "h")), "prefect blcok")  # fmt: skip
    fresh = [timed([ESAP, "facilities"], environment(work / f"fresh{i}")) for i in range(ROUNDS)]
    first = timed([PREFECT, "block", "ls"], environment(work / "first"))
    row("facilities, fresh home (no server needed)", statistics.median(fresh), first,
        "prefect block ls, fresh home (first migration)")  # fmt: skip
    home = work / "first"  # its database exists now
    ours, theirs = [], []
    for _ in range(ROUNDS):
        ours.append(timed([ESAP, "facilities"], environment(home)))
        theirs.append(timed([PREFECT, "block", "ls"], environment(home)))
    row("facilities, no stack (temporary server)", statistics.median(ours),
        statistics.median(theirs), "prefect block ls")  # fmt: skip
    port, gateway = free_port(), free_port()
    up = subprocess.Popen(
        [ESAP, "up", "--port", str(port), "--gateway-port", str(gateway)],
        env=environment(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while not (home / "stack.json").exists():
            if up.poll() is not None:
                raise RuntimeError("up did not start")
            time.sleep(0.5)
        api = f"http://127.0.0.1:{port}/api"
        for command in (["facilities"], ["stores"], ["workflows"]):
            row(f"{' '.join(command)}, with up running", median([ESAP, *command],
                environment(home)), median([PREFECT, "block", "ls"], environment(home, api)),
                "prefect block ls against it")  # fmt: skip
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(120)


if __name__ == "__main__":
    main()
