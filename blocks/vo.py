"""VO basket items: datasets behind access URLs and DataLink `#this` links (read with pyvo).

Every URL goes through the guarded client; files land atomically under <dest>/vo/<item>/
and carry their size and checksums.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict

from blocks import outbound
from blocks.basket import VoItem
from core.checksums import digest
from core.errors import FatalError, TransientError
from core.files import atomic_file

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
DATALINK_BYTES = 16 * 2**20


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


def _failed(item: VoItem, exc: FatalError | TransientError) -> FatalError | TransientError:
    return type(exc)(f"input {item.index}: {exc}")


def _download(item: VoItem, url: str, dest: Path, name: str) -> FetchedFile:
    target = dest / "vo" / str(item.index) / name
    try:
        with atomic_file(target) as out:
            outbound.fetch(url, out)
    except (FatalError, TransientError) as exc:
        raise _failed(item, exc) from None
    sums = digest(target)
    return FetchedFile(
        source=url,
        name=target.relative_to(dest).as_posix(),
        path=target,
        size=sums.size,
        sha256=sums.sha256,
        adler32=sums.adler32,
    )


def _datalink_urls(item: VoItem) -> list[str]:
    from astropy.io.votable import parse
    from pyvo.dal.adhoc import DatalinkResults

    assert item.datalink is not None
    try:
        body = outbound.read(item.datalink, DATALINK_BYTES)
    except (FatalError, TransientError) as exc:
        raise _failed(item, exc) from None
    try:
        links = DatalinkResults(parse(io.BytesIO(body)), url=item.datalink)
    except Exception:
        raise FatalError(f"input {item.index}: {item.datalink} is not a DataLink VOTable") from None
    urls = []
    # exact "#this" only: narrower terms would need the IVOA vocabulary from the network
    for row in links.bysemantics("#this", include_narrower=False):
        error = row.get("error_message")
        if error:
            raise FatalError(f"input {item.index}: the DataLink service says: {error}")
        url = row.getdataurl()
        if url:
            try:
                urls.append(outbound.check_url(str(url)))
            except outbound.Refused as exc:
                raise _failed(item, exc) from None
    if not urls:
        raise FatalError(f"input {item.index}: the DataLink at {item.datalink} has no #this link")
    return urls


def fetch_vo(items: Sequence[VoItem], dest: Path) -> list[FetchedFile]:
    """Fetch every VO item into `dest`/vo/<item number>/; errors name the item and URL.

    Sizes and times are capped by $ESAP_PREFECT_FETCH_MAX_BYTES and _TIMEOUT (blocks.outbound).
    """
    fetched = []
    for item in items:
        if item.datalink:
            for url in _datalink_urls(item):
                fetched.append(_download(item, url, dest, _basename(url, None)))
        elif item.access_url:
            url = item.access_url
            fetched.append(_download(item, url, dest, _basename(url, item.name)))
    return fetched
