"""An HTTP proxy that counts the calls passing through it: what a worker really asks a server.

Tests and benchmarks put it in front of DiracX to count submissions and searches on the wire.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class CountingProxy:
    """Forwards every request to `target`; counts them by (method, path) and keeps bodies."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.calls: Counter[tuple[str, str]] = Counter()
        self.bodies: list[tuple[str, str, Any]] = []
        self.times: list[float] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def count(self, method: str, path: str) -> int:
        with self._lock:
            return self.calls[(method, path)]

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.bodies.clear()
            self.times.clear()

    def start(self) -> CountingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _record(self, method: str, path: str, body: bytes) -> None:
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        with self._lock:
            self.calls[(method, path)] += 1
            self.bodies.append((method, path, parsed))
            self.times.append(time.time())

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                proxy._record(self.command, path, body)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                answer = httpx.request(
                    self.command,
                    proxy.target + self.path,
                    headers=headers,
                    content=body,
                    timeout=120,
                )
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in HOP_BY_HOP | {"content-encoding"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *_args: Any) -> None:
                return

        return Handler
