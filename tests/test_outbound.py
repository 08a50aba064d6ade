"""The guarded client against the second probe's SSRF: job inputs never reach internal URLs.

Real HTTP servers on loopback stand for the internal services; the session's VO service is
the one allowed ($ESAP_PREFECT_FETCH_ALLOW), every other loopback port must stay untouched.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from blocks import outbound
from blocks.apptainer import ApptainerFacility, _registry
from blocks.basket import parse_inputs
from blocks.vo import fetch_vo
from core.errors import FatalError, TransientError
from tests.servers.vo import VoService, vo_service

INTERNAL = [
    "http://127.0.0.1:{port}/secret",
    "http://127.1:{port}/secret",
    "http://0x7f000001:{port}/secret",
    "http://localhost:{port}/secret",
    "http://LOCALHOST.:{port}/secret",
    "http://[::1]:{port}/secret",
    "http://[::ffff:127.0.0.1]:{port}/secret",
    "http://0.0.0.0:{port}/secret",
]
PRIVATE = [
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://172.16.0.1/",
    "http://100.64.0.1/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
]


@pytest.fixture
def internal(tmp_path: Path) -> Iterator[VoService]:
    """An internal service on loopback that nobody allowed: it must never see a request."""
    with vo_service(tmp_path / "internal") as service:
        service.file("secret", b"the service account's token")
        yield service
    assert service.hosts == [], "the internal service was reached"


def _port(service: VoService) -> int:
    return int(urlsplit(service.url).port or 0)


def _fetch(url: str) -> bytes:
    out = io.BytesIO()
    outbound.fetch(url, out)
    return out.getvalue()


@pytest.mark.parametrize("template", INTERNAL)
def test_no_spelling_of_loopback_reaches_an_internal_service(
    template: str, internal: VoService
) -> None:
    url = template.format(port=_port(internal))
    with pytest.raises(outbound.Refused, match="cannot be fetched: its host is not a public"):
        _fetch(url)


@pytest.mark.parametrize("url", PRIVATE)
def test_private_link_local_and_shared_addresses_are_refused_before_connecting(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(outbound.Refused, match="its host is not a public address"):
        _fetch(url)
    with pytest.raises(outbound.Refused):
        outbound.check_url(url)
    assert time.monotonic() - started < 5, "a connection must not even be tried"


def test_the_probe_basket_item_for_another_users_job_token_is_refused_at_the_boundary(
    prefect_api: str,
) -> None:
    port = urlsplit(prefect_api).port
    url = (
        f"http://127.0.0.1:{port}/api/block_types/slug/secret/block_documents/name/"
        "uws-job-5?include_secrets=true"
    )
    with pytest.raises(FatalError, match=r"^input 1: access_url: .* cannot be fetched"):
        parse_inputs([{"archive": "ivoa", "record": {"access_url": url}}])
    for key in ("url", "datalink"):
        with pytest.raises(FatalError, match="cannot be fetched"):
            parse_inputs([{"archive": "ivoa", "record": {key: url}}])


def test_the_prefect_api_stays_refused_when_its_whole_host_is_allowed(
    prefect_api: str, internal: VoService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(outbound.ALLOW_VARIABLE, "127.0.0.1")
    with pytest.raises(outbound.Refused, match="this site's Prefect API"):
        _fetch(f"{prefect_api}/admin/version")
    internal.file("open", b"allowed")
    assert _fetch(f"{internal.url}/open") == b"allowed"
    internal.hosts.clear()
    monkeypatch.setenv(outbound.ALLOW_VARIABLE, f"127.0.0.1:{urlsplit(prefect_api).port}")
    # named with its port, it is reached: and it still asks for its credential
    with pytest.raises(FatalError, match="the server answered 401"):
        _fetch(f"{prefect_api}/admin/version")


def test_a_closed_port_and_an_open_one_get_the_same_answer(internal: VoService) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    answers = []
    for port in (_port(internal), closed.getsockname()[1]):
        with pytest.raises(outbound.Refused) as refused:
            _fetch(f"http://127.0.0.1:{port}/x")
        answers.append(str(refused.value).replace(str(port), "PORT"))
    closed.close()
    assert answers[0] == answers[1]


def test_a_redirect_from_an_allowed_service_to_an_internal_one_is_refused(
    vo: VoService, internal: VoService, prefect_api: str, tmp_path: Path
) -> None:
    hop = vo.redirect("hop-internal", f"{internal.url}/secret")
    with pytest.raises(FatalError, match=r"^input 1: .*/secret cannot be fetched"):
        fetch_vo(parse_inputs([{"archive": "ivoa", "record": {"access_url": hop}}]).vo, tmp_path)
    to_api = vo.redirect("hop-api", f"{prefect_api}/block_documents/filter")
    with pytest.raises(FatalError, match="cannot be fetched"):
        _fetch(to_api)
    assert not list((tmp_path / "vo").rglob("*")) or not any(
        p.is_file() for p in (tmp_path / "vo").rglob("*")
    ), "nothing half-fetched is left"


def test_a_public_redirect_chain_is_followed_and_capped(vo: VoService) -> None:
    target = vo.file("chain/data.bin", b"data")
    assert _fetch(vo.redirect("chain/one", target)) == b"data"
    url = target
    for hop in range(outbound.MAX_REDIRECTS + 1):
        url = vo.redirect(f"chain/loop-{hop}", url)
    with pytest.raises(FatalError, match="more than 5 redirects"):
        _fetch(url)


def test_a_datalink_pointing_inside_is_refused_before_any_fetch(
    vo: VoService, internal: VoService, tmp_path: Path
) -> None:
    links = vo.datalink("inside.xml", [("#this", f"{internal.url}/secret", None)])
    with pytest.raises(FatalError, match=r"^input 1: .*/secret cannot be fetched"):
        fetch_vo(parse_inputs([{"archive": "ivoa", "record": {"datalink": links}}]).vo, tmp_path)


def test_a_name_is_resolved_once_and_connected_to_with_its_host_kept(
    internal: VoService, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _port(internal)
    monkeypatch.setenv(outbound.ALLOW_VARIABLE, f"127.0.0.1:{port}")
    assert _fetch(f"http://localhost:{port}/secret") == b"the service account's token"
    assert internal.hosts == [f"localhost:{port}"]
    internal.hosts.clear()


def test_a_file_over_the_cap_is_refused_and_leaves_nothing(
    vo: VoService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = vo.file("big.bin", b"x" * 4096)
    monkeypatch.setenv(outbound.MAX_BYTES_VARIABLE, "2048")
    with pytest.raises(FatalError, match="larger than the 2048-byte cap"):
        fetch_vo(parse_inputs([{"archive": "ivoa", "record": {"access_url": big}}]).vo, tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    monkeypatch.setenv(outbound.MAX_BYTES_VARIABLE, "lots")
    with pytest.raises(FatalError, match="ESAP_PREFECT_FETCH_MAX_BYTES"):
        _fetch(big)


def test_a_server_that_trickles_is_cut_off_at_the_time_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def trickle() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        try:
            for _ in range(100):
                conn.sendall(b"x" * 10)
                time.sleep(0.1)
        except OSError:
            pass
        conn.close()

    threading.Thread(target=trickle, daemon=True).start()
    monkeypatch.setenv(outbound.ALLOW_VARIABLE, f"127.0.0.1:{port}")
    monkeypatch.setenv(outbound.TIMEOUT_VARIABLE, "1")
    started = time.monotonic()
    with pytest.raises(FatalError, match="took longer than 1 s"):
        _fetch(f"http://127.0.0.1:{port}/slow")
    assert time.monotonic() - started < 5
    listener.close()


def test_an_unknown_host_is_worth_a_retry_and_says_so_in_words() -> None:
    with pytest.raises(TransientError, match=r"^http://nowhere.invalid/x cannot be fetched"):
        _fetch("http://nowhere.invalid/x")


@pytest.mark.parametrize("entry", ["nonsense", "127.0.0.1:99999", "10.0.0.0/40"])
def test_a_bad_allow_entry_names_the_setting(entry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(outbound.ALLOW_VARIABLE, entry)
    with pytest.raises(FatalError, match=f"ESAP_PREFECT_FETCH_ALLOW: '{entry}'"):
        outbound.allow_list()


def test_apptainer_images_at_internal_urls_are_not_pulled(
    internal: VoService, tmp_path: Path
) -> None:
    facility = ApptainerFacility(workdir=tmp_path)
    with pytest.raises(FatalError, match="cannot be fetched: its host is not a public"):
        facility.local_image(f"{internal.url}/image.sif")
    with pytest.raises(FatalError, match="its registry is not a public address"):
        facility.local_image(f"docker://127.0.0.1:{_port(internal)}/library/alpine:3")
    assert _registry("docker://ubuntu:22.04", "docker") is None
    assert _registry("docker://ghcr.io/owner/image:1", "docker") == "ghcr.io"
    assert _registry("library://alpine", "library") is None


def test_an_apptainer_image_url_that_is_no_sif_is_refused(vo: VoService, tmp_path: Path) -> None:
    facility = ApptainerFacility(workdir=tmp_path)
    url = vo.file("not-an-image.sif", b"<html>login</html>")
    with pytest.raises(FatalError, match="is not a SIF image file"):
        facility.local_image(url)
    assert not list(facility.image_cache_dir().glob("*.sif"))
