"""The guarded HTTP client for every URL a user names: public addresses only, capped in size, timed.

A name is resolved once and every address it has is checked; the connection then goes to
that very address (Host and TLS SNI keep the name), so a second lookup cannot move it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

import httpx

from core.errors import FatalError, TransientError
from core.settings import env_number

ALLOW_VARIABLE = "ESAP_PREFECT_FETCH_ALLOW"
MAX_BYTES_VARIABLE = "ESAP_PREFECT_FETCH_MAX_BYTES"
TIMEOUT_VARIABLE = "ESAP_PREFECT_FETCH_TIMEOUT"
LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
MAX_REDIRECTS = 5

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(FatalError):
    """A URL the guarded client will not fetch; the message says why, never what lies behind."""


@dataclass(frozen=True)
class Allowed:
    """One entry of $ESAP_PREFECT_FETCH_ALLOW: a network, and one port of it or all."""

    network: Network
    port: int | None

    def admits(self, address: Address, port: int) -> bool:
        return address in self.network and self.port in (None, port)


def _entry(text: str) -> Allowed:
    host, port = text, None
    if text.count(":") == 1 or text.startswith("["):
        host, _, number = text.rpartition(":")
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise FatalError(f"{ALLOW_VARIABLE}: {text!r} has no valid port")
        port = int(number)
    try:
        return Allowed(ipaddress.ip_network(host.strip("[]"), strict=False), port)
    except ValueError:
        raise FatalError(
            f"{ALLOW_VARIABLE}: {text!r} is not an address or network (ADDRESS[/BITS][:PORT])"
        ) from None


def allow_list() -> list[Allowed]:
    """The non-public addresses jobs may fetch from ($ESAP_PREFECT_FETCH_ALLOW, comma-separated)."""
    return [_entry(part.strip()) for part in os.environ.get(ALLOW_VARIABLE, "").split(",") if part]


def max_bytes() -> int:
    """The most bytes one fetch may bring ($ESAP_PREFECT_FETCH_MAX_BYTES, default 4 GiB)."""
    return int(env_number(MAX_BYTES_VARIABLE, str(4 * 2**30), 1024, 2**42, whole=True))


def timeout() -> float:
    """Seconds one fetch may take in all ($ESAP_PREFECT_FETCH_TIMEOUT, default 600)."""
    return env_number(TIMEOUT_VARIABLE, "600", 1, 86400)


def _prefect_api() -> tuple[str, int] | None:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value() or os.environ.get("PREFECT_API_URL")
    if not url:
        return None
    parts = urlsplit(url)
    return (parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))


def _api_addresses(host: str) -> set[Address]:
    try:
        return {ipaddress.ip_address(host)}
    except ValueError:
        pass
    try:
        return {_address(str(info[4][0])) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


def _address(text: str) -> Address:
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def check_address(address: Address, port: int, allowed: list[Allowed] | None = None) -> None:
    """Refused unless `address`:`port` is public, or allowed, and is not the Prefect API."""
    allowed = allow_list() if allowed is None else allowed
    named = [entry for entry in allowed if entry.admits(address, port)]
    api = _prefect_api()
    if api and port == api[1] and (address.is_loopback or address in _api_addresses(api[0])):
        if not any(entry.port == port for entry in named):
            raise Refused("its address is this site's Prefect API")
        return
    if not address.is_global and not named:
        raise Refused("its host is not a public address")


def check_url(url: str) -> str:
    """`url` if it is http(s) and names no local host or non-public address literal (no DNS).

    For checks at the boundary; the guarded client checks the addresses again when it fetches.
    """
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused(f"{url!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(f"{url!r} must be an http(s) URL with a host")
    host = parts.hostname.rstrip(".").lower()
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        literal: Address | None = ipaddress.ip_address("127.0.0.1")
    else:
        try:
            literal = _address(host)
        except ValueError:
            literal = None
    if literal is not None:
        try:
            check_address(literal, port)
        except Refused as exc:
            raise Refused(f"{url} cannot be fetched: {exc}") from None
    return url


def _checked_addresses(url: str, host: str, port: int, allowed: list[Allowed]) -> list[Address]:
    """Every address `host` resolves to, each checked; Refused names `url`.

    OSError when the name resolves to nothing.
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [_address(str(info[4][0])) for info in infos]
    for address in addresses:
        try:
            check_address(address, port, allowed)
        except Refused as exc:
            raise Refused(f"{url} cannot be fetched: {exc}") from None
    return addresses


class GuardedTransport(httpx.HTTPTransport):
    """httpx transport that connects only to checked addresses of the name asked for."""

    def __init__(self) -> None:
        super().__init__(retries=0)
        self._allowed = allow_list()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https") or not url.host:
            raise Refused(f"{url} must be an http(s) URL with a host")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = _checked_addresses(str(url), url.host, port, self._allowed)
        except OSError:
            raise httpx.ConnectError(f"{url.host} is not known") from None
        pinned = httpx.Request(
            request.method,
            url.copy_with(host=str(addresses[0])),
            headers=request.headers,
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": url.host},
        )
        return super().handle_request(pinned)


@contextmanager
def client(seconds: float | None = None) -> Iterator[httpx.Client]:
    """An httpx client through the guarded transport (no proxies from the environment)."""
    wait = timeout() if seconds is None else seconds
    with httpx.Client(
        transport=GuardedTransport(),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        trust_env=False,
        timeout=httpx.Timeout(min(wait, 60.0), connect=min(wait, 30.0)),
    ) as guarded:
        yield guarded


def _failed(url: str, exc: Exception) -> Exception:
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        reason = f"the server answered {status}"
        return (TransientError if status >= 500 else FatalError)(
            f"{url} cannot be fetched: {reason}"
        )
    if isinstance(exc, httpx.TooManyRedirects):
        return FatalError(f"{url} cannot be fetched: more than {MAX_REDIRECTS} redirects")
    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"{url} cannot be fetched: the server did not answer in time")
    if isinstance(exc, httpx.RemoteProtocolError):
        return TransientError(f"{url} cannot be fetched: the server broke off its answer")
    return TransientError(f"{url} cannot be fetched: the server could not be reached")


def fetch(url: str, out: BinaryIO, *, limit: int | None = None) -> int:
    """Stream `url` into `out`; the bytes written. Refused, FatalError or TransientError.

    Stops at `limit` bytes (default $ESAP_PREFECT_FETCH_MAX_BYTES) and at the time-out.
    """
    cap = max_bytes() if limit is None else limit
    wait = timeout()
    deadline = time.monotonic() + wait
    written = 0
    try:
        check_url(url)
        with client(wait) as guarded, guarded.stream("GET", url) as response:
            response.raise_for_status()
            if int(response.headers.get("content-length") or 0) > cap:
                raise FatalError(f"{url} is larger than the {cap}-byte cap")
            for chunk in response.iter_bytes():
                written += len(chunk)
                if written > cap:
                    raise FatalError(f"{url} is larger than the {cap}-byte cap")
                if time.monotonic() > deadline:
                    raise FatalError(f"{url} took longer than {wait:g} s")
                out.write(chunk)
    except httpx.HTTPError as exc:
        raise _failed(url, exc) from None
    return written


def read(url: str, limit: int) -> bytes:
    """The body of `url`, at most `limit` bytes (FatalError past it), as `fetch`."""
    import io

    buffer = io.BytesIO()
    fetch(url, buffer, limit=limit)
    return buffer.getvalue()


def check_host(url: str) -> None:
    """Refused unless every address of `url`'s host may be fetched from, now.

    For tools that fetch by themselves (an image pull): the closest check short of fetching.
    """
    check_url(url)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    with suppress(OSError):  # an unknown host: the tool says so
        _checked_addresses(url, parts.hostname or "", port, allow_list())
