"""The warm parent of the `warm` pool: Prefect and the workflows imported once, a fork per run.

Listens on a Unix socket; each connection (from `workers.warm_client`) hands over its stdin,
stdout and stderr, its environment and working directory; the server forks a child that
becomes a session leader, takes them over and runs `prefect.engine` as `python -m` would.
The server sends the child's pid, then its exit code (negative: the signal that ended it).
A client that goes away before its child ends takes the child's process group with it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import struct
import sys
import threading
import traceback
import warnings
from pathlib import Path
from typing import Any

HEADER = struct.Struct("!I")
MAX_REQUEST = 1 << 20
FDS = 3  # stdin, stdout, stderr


def warm_up() -> None:
    """Import what every flow run needs, so that a child starts with it in memory."""
    import prefect.engine
    import prefect.flow_engine

    from flows.registry import WORKFLOWS

    for workflow in WORKFLOWS.values():
        workflow.load()
    del prefect  # imported for its side effect: the modules in sys.modules


def receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One request: a length-prefixed JSON object, the client's three descriptors with it."""
    fds: list[int] = []
    data, ancillary, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(FDS * 4))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(payload) // 4}i", payload))
    try:
        if len(data) < HEADER.size or len(fds) != FDS:
            raise ValueError("a request is a length, a JSON object and three descriptors")
        (size,) = HEADER.unpack_from(data)
        if size > MAX_REQUEST:
            raise ValueError(f"a request of {size} bytes is over {MAX_REQUEST}")
        body = data[HEADER.size :]
        while len(body) < size:
            more = conn.recv(size - len(body))
            if not more:
                raise ValueError("the client left in the middle of its request")
            body += more
        request = json.loads(body)
        if not isinstance(request, dict) or not isinstance(request.get("env"), dict):
            raise ValueError("a request names env and cwd")
        return request, fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def run_child(request: dict[str, Any], fds: list[int]) -> int:
    """In the forked child: become the flow run's process and run the engine; its exit code."""
    os.setsid()
    for number, fd in enumerate(fds):
        os.dup2(fd, number)
        os.close(fd)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    os.chdir(request.get("cwd") or "/")
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in request["env"].items()})
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own streams
    sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
    from prefect.context import refresh_global_settings_context
    from prefect.logging.configuration import setup_logging

    refresh_global_settings_context()
    setup_logging(incremental=False)
    sys.argv = ["prefect.engine"]
    # the warm parent imported the module; running it as __main__ again is the point
    warnings.filterwarnings("ignore", "'prefect.engine' found in sys.modules", RuntimeWarning)
    code = 0
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    with contextlib.suppress(BaseException):
        # what the interpreter does at exit: threading's exit hooks first (Prefect drains its
        # log and event services there), then atexit's
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    return code


class ForkServer:
    """The accept loop: one child per connection, reaped on SIGCHLD, killed if its client dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.children: dict[int, socket.socket] = {}
        self.selector = selectors.DefaultSelector()

    def serve(self) -> None:
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        stopping = False

        def stop(*_: Any) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old)
        listener.listen(64)
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        self.selector.register(wake_read, selectors.EVENT_READ, "wake")
        print("ready", flush=True)
        # nobody reads the pipe after this line: anything printed later must not fill it
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        while not stopping:
            for key, _ in self.selector.select():
                if key.data == "accept":
                    self._accept(listener, wake_read, wake_write)
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_read, 512)
                    self._reap()
                else:
                    self._client_left(key.data)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self, listener: socket.socket, *private: int) -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        try:
            request, fds = receive(conn)
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"error": str(exc)[:500]}).encode() + b"\n")
            conn.close()
            return
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self.selector.close()
                listener.close()
                conn.close()
                for other in self.children.values():
                    other.close()
                for fd in private:
                    os.close(fd)
                code = run_child(request, fds)
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ, pid)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            with contextlib.suppress(KeyError):
                self.selector.unregister(conn)
            with contextlib.suppress(OSError):
                conn.setblocking(True)
                conn.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
            conn.close()

    def _client_left(self, pid: int) -> None:
        conn = self.children[pid]
        try:
            if conn.recv(64):
                return  # clients send nothing after their request; ignore it
        except BlockingIOError:
            return
        except OSError:
            pass
        self.selector.unregister(conn)  # gone: the child follows it, and is reaped as usual
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def main() -> None:
    """`python -m workers.forkserver SOCKET`: warm up, then serve until SIGTERM."""
    warm_up()
    ForkServer(Path(sys.argv[1])).serve()


if __name__ == "__main__":
    main()
