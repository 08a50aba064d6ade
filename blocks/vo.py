"""VO basket items fetched with pyvo: datasets behind access URLs and DataLink `#this` links.

Files land atomically under <dest>/vo/<item>/ and carry their size and checksums.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict

from blocks.basket import VoItem
from core.checksums import digest
from core.errors import FatalError, TransientError
from core.files import atomic_file

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class FetchedFile(BaseModel):
    """One VO dataset on local disk."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    name: str
    path: Path
    size: int
    sha256: str
    adler32: str


def _basename(url: str, suggested: str | None) -> str:
    raw = suggested or PurePosixPath(urlparse(url).path).name or "dataset"
    return _UNSAFE.sub("_", raw).strip("._") or "dataset"


def _failed(item: VoItem, url: str, exc: Exception) -> Exception:
    import requests

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status is None:
        status = getattr(exc, "code", None)
    if isinstance(exc, requests.ConnectionError | requests.Timeout) or (
        isinstance(status, int) and status >= 500
    ):
        return TransientError(f"input {item.index}: {url} could not be reached ({exc})")
    return FatalError(f"input {item.index}: {url} cannot be fetched: {exc}")


def _store(item: VoItem, url: str, dest: Path, name: str, stream: Any) -> FetchedFile:
    target = dest / "vo" / str(item.index) / name
    with atomic_file(target) as out:
        for chunk in stream:
            out.write(chunk)
    sums = digest(target)
    return FetchedFile(
        source=url,
        name=target.relative_to(dest).as_posix(),
        path=target,
        size=sums.size,
        sha256=sums.sha256,
        adler32=sums.adler32,
    )


def _download(item: VoItem, url: str, dest: Path, name: str, timeout: float) -> FetchedFile:
    from pyvo.utils.http import create_session

    try:
        with create_session().get(url, stream=True, timeout=timeout) as response:
            response.raise_for_status()
            return _store(item, url, dest, name, response.iter_content(1 << 20))
    except (FatalError, TransientError):
        raise
    except Exception as exc:
        raise _failed(item, url, exc) from exc


def _datalink_urls(item: VoItem, timeout: float) -> list[str]:
    from pyvo.dal.adhoc import DatalinkResults
    from pyvo.utils.http import create_session

    assert item.datalink is not None
    try:
        links = DatalinkResults.from_result_url(item.datalink, session=create_session())
    except Exception as exc:
        raise _failed(item, item.datalink, exc) from exc
    urls = []
    # exact "#this" only: narrower terms would need the IVOA vocabulary from the network
    for row in links.bysemantics("#this", include_narrower=False):
        error = row.get("error_message")
        if error:
            raise FatalError(f"input {item.index}: the DataLink service says: {error}")
        url = row.getdataurl()
        if url:
            urls.append(str(url))
    if not urls:
        raise FatalError(f"input {item.index}: the DataLink at {item.datalink} has no #this link")
    return urls


def fetch_vo(items: Sequence[VoItem], dest: Path, timeout: float = 300.0) -> list[FetchedFile]:
    """Fetch every VO item into `dest`/vo/<item number>/; errors name the item and URL."""
    fetched = []
    for item in items:
        if item.datalink:
            for url in _datalink_urls(item, timeout):
                fetched.append(_download(item, url, dest, _basename(url, None), timeout))
        elif item.access_url:
            url = item.access_url
            fetched.append(_download(item, url, dest, _basename(url, item.name), timeout))
    return fetched
