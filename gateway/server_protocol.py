"""The gateway's HTTP protocol: uvicorn's h11 protocol with a time limit on request headers.

uvicorn times idle keep-alive connections only; a client that connects and sends nothing,
or sends its headers a byte at a time, would hold a connection for ever (slowloris).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class TimedH11Protocol(H11Protocol):
    """Closes a connection whose next request's headers are not all in within `header_seconds`."""

    header_seconds = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._time_headers()

    def data_received(self, data: bytes) -> None:
        self._time_headers()
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the request line and headers are in
            self._stop_timing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timing()
        super().connection_lost(exc)

    def _time_headers(self) -> None:
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._header_timer = self.loop.call_later(self.header_seconds, self._headers_late)

    def _stop_timing(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def timed_protocol(header_seconds: float) -> type[TimedH11Protocol]:
    """The protocol class for uvicorn's `http` setting, with this header time limit."""
    return type("GatewayH11Protocol", (TimedH11Protocol,), {"header_seconds": header_seconds})
