"""The command of a `warm` pool flow run: hand this process over to the fork server's child.

Run by file path with `python -I` (standard library only, nothing else imported, so it starts
in tens of milliseconds). It passes its stdin, stdout, stderr, environment and working
directory to the server at $ESAP_WARM_SOCKET, forwards SIGTERM and SIGINT to the child's
process group, and ends as the child ended (the same exit code, or the same signal), so the
worker sees the flow run's process as if it had spawned it. Without a server it runs
`python -m prefect.engine` itself.
"""

import contextlib
import json
import os
import signal
import socket
import struct
import sys

SOCKET_VARIABLE = "ESAP_WARM_SOCKET"
PYTHON_VARIABLE = "ESAP_WARM_PYTHON"


def _cold() -> None:
    """No warm parent: become the engine, as Prefect's process worker would have started it."""
    python = os.environ.get(PYTHON_VARIABLE) or sys.executable
    os.execv(python, [python, "-m", "prefect.engine"])


def _connect(path: str) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        return None
    return conn


def main() -> None:
    """Ask for a child, relay signals to it, and end as it ended."""
    path = os.environ.get(SOCKET_VARIABLE, "")
    conn = _connect(path) if path else None
    if conn is None:
        _cold()
        return
    body = json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}).encode()
    fds = struct.pack("3i", 0, 1, 2)
    conn.sendmsg(
        [struct.pack("!I", len(body)) + body], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)]
    )
    reader = conn.makefile("rb")
    first = json.loads(reader.readline() or b"{}")
    if "pid" not in first:
        print(f"warm pool: {first.get('error', 'no answer')}; starting cold", file=sys.stderr)
        conn.close()
        _cold()
        return
    child = int(first["pid"])

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    line = reader.readline()
    code = json.loads(line).get("exit", 1) if line else 1
    if code < 0:  # ended by a signal: end by the same one
        if -code not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
