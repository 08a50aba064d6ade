"""ESAP shopping-basket items and plain DIDs as job inputs: which are Rucio, which are VO.

A basket item is `{"archive": ..., "record": {...}}`; a plain string is a Rucio DID.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from blocks.outbound import Refused, check_url
from blocks.rucio.dids import Did
from core.errors import FatalError

RUCIO_ARCHIVES = frozenset({"rucio"})
VO_ARCHIVES = frozenset({"astron_vo", "vo_reg", "ivoa"})
SUPPORTED = ", ".join(sorted(RUCIO_ARCHIVES | VO_ARCHIVES))

InputItem = str | Mapping[str, Any]


class VoItem(BaseModel):
    """A VO basket item: a dataset behind an access URL, or the `#this` links of a DataLink."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int
    archive: str
    access_url: str | None = None
    datalink: str | None = None
    name: str | None = None


class Inputs(BaseModel):
    """Job inputs sorted by where they come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dids: list[str] = []
    vo: list[VoItem] = []


def _http(url: Any, where: str) -> str:
    """`url` if it is one the guarded client may fetch (so far as can be told without DNS)."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise FatalError(f"{where} must be an http(s) URL, not {url!r}")
    try:
        return check_url(url)
    except Refused as exc:
        raise FatalError(f"{where}: {exc}") from None


def _rucio_did(record: Mapping[str, Any], where: str) -> str:
    if isinstance(record.get("did"), str):
        return str(record["did"])
    if isinstance(record.get("scope"), str) and isinstance(record.get("name"), str):
        return f"{record['scope']}:{record['name']}"
    raise FatalError(f"{where}: a rucio record needs 'did' or 'scope' and 'name'")


def _vo_item(index: int, archive: str, record: Mapping[str, Any], where: str) -> VoItem:
    name = record.get("name") or record.get("filename")
    if record.get("datalink"):
        return VoItem(
            index=index,
            archive=archive,
            datalink=_http(record["datalink"], f"{where}: datalink"),
            name=str(name) if name else None,
        )
    url = record.get("access_url") or record.get("url")
    if url:
        return VoItem(
            index=index,
            archive=archive,
            access_url=_http(url, f"{where}: access_url"),
            name=str(name) if name else None,
        )
    raise FatalError(f"{where}: a {archive} record needs 'access_url' (or 'url') or 'datalink'")


def parse_inputs(items: Sequence[InputItem]) -> Inputs:
    """Sort DIDs and basket items into Rucio DIDs and VO items; errors name the item."""
    dids: list[str] = []
    vo: list[VoItem] = []
    for index, item in enumerate(items, start=1):
        where = f"input {index}"
        if isinstance(item, str):
            dids.append(item)
            continue
        if not isinstance(item, Mapping) or not isinstance(item.get("record"), Mapping):
            raise FatalError(
                f"{where} must be a DID string or a basket item {{archive, record}}, not {item!r}"
            )
        archive = str(item.get("archive", "")).lower()
        if archive in RUCIO_ARCHIVES:
            dids.append(_rucio_did(item["record"], where))
        elif archive in VO_ARCHIVES:
            vo.append(_vo_item(index, archive, item["record"], where))
        else:
            raise FatalError(
                f"{where}: archive {item.get('archive')!r} is not supported (supported: "
                f"{SUPPORTED})"
            )
    return Inputs(dids=dids, vo=vo)


def _checked(items: list[str | dict[str, Any]]) -> list[str | dict[str, Any]]:
    """The items, if each is a well-formed DID (no wildcard) or a supported basket item."""
    try:
        for did in parse_inputs(items).dids:
            Did.parse(did, "scope")
    except FatalError as exc:  # a parameter's check: pydantic names the parameter
        raise ValueError(str(exc)) from None
    return items


InputItems = Annotated[list[str | dict[str, Any]], AfterValidator(_checked)]
"""Workflow inputs: Rucio DIDs and ESAP basket items, checked when the parameters are."""
