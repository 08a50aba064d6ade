"""Finding facilities and stores by name among the blocks saved in Prefect.

With nothing saved, the embedded defaults (a local facility and a local archive) are used.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import BlockDocument
from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL

from blocks.archive import LocalArchive, StoreBlock
from blocks.facility import FacilityBlock
from blocks.local import LocalFacility
from core.errors import UnknownBlockError
from core.settings import embedded_database_url, home

if TYPE_CHECKING:
    from blocks.rucio import RucioStore

B = TypeVar("B", FacilityBlock, StoreBlock)

FACILITIES: dict[str, str] = {
    "local-facility": "blocks.local:LocalFacility",
    "dirac-facility": "blocks.dirac.facility:DiracFacility",
    "docker-facility": "blocks.docker:DockerFacility",
    "apptainer-facility": "blocks.apptainer:ApptainerFacility",
    "kubernetes-facility": "blocks.kubernetes:KubernetesFacility",
}
"""Facility block types by slug, imported only when a block of theirs is saved (their SDKs
are slow to import); tests keep this equal to `blocks.catalogue`."""
STORES: dict[str, str] = {
    "local-archive": "blocks.archive:LocalArchive",
    "rucio-store": "blocks.rucio.store:RucioStore",
}

DEFAULT_NAME = "local"
RUCIO_NAME = "rucio"
ARCHIVE_RSE_ENV = "ESAP_RUCIO_ARCHIVE_RSE"


PAGE = 200


def nothing_saved_yet() -> bool:
    """True when no Prefect server can hold anything of this home yet.

    No API is set and the embedded database was never created: there is no block to read,
    and no temporary server needs starting to learn that.
    """
    database = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value() or "")
    return (
        not PREFECT_API_URL.value()
        and database == embedded_database_url()
        and not (home() / "prefect.db").exists()
    )


def _class(where: str) -> type[Any]:
    module, _, name = where.partition(":")
    found: type[Any] = getattr(importlib.import_module(module), name)
    return found


def _documents(types: dict[str, str]) -> list[tuple[str, BlockDocument]]:
    """The saved documents of these block types, with their slugs, one call per 200."""
    if nothing_saved_yet():
        return []
    found: list[tuple[str, BlockDocument]] = []
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            page = client.read_block_documents(offset=offset, limit=PAGE, include_secrets=True)
            for doc in page:
                slug = doc.block_type.slug if doc.block_type else ""
                if slug in types and doc.name and not doc.is_anonymous:
                    found.append((slug, doc))
            if len(page) < PAGE:
                return found
            offset += PAGE


def _saved(types: dict[str, str]) -> list[tuple[type[Any], BlockDocument]]:
    """The saved documents of these block types (by slug) and the class of each."""
    return [(_class(types[slug]), doc) for slug, doc in _documents(types)]


def _block(cls: type[Any], document: BlockDocument) -> Any:
    """The block a saved document holds, without asking the server again."""
    return cls._from_block_document(document)


def _all(types: dict[str, str], default: B) -> list[B]:
    blocks = [_block(cls, doc) for cls, doc in _saved(types)]
    names = {getattr(b, "_block_document_name", None) for b in blocks}
    if DEFAULT_NAME not in names:
        blocks.insert(0, default)
    return blocks


def _one(types: dict[str, str], name: str, default: B, what: str) -> B:
    slug, _, plain = name.rpartition("/")
    everything = _saved(types)
    saved = [
        (cls, doc)
        for cls, doc in everything
        if doc.name == plain and (not slug or cls.get_block_type_slug() == slug)
    ]
    if len(saved) == 1:
        return cast(B, _block(*saved[0]))
    if len(saved) > 1:
        kinds = ", ".join(f"{cls.get_block_type_slug()}/{doc.name}" for cls, doc in saved)
        raise UnknownBlockError(f"{what} name {name!r} is ambiguous: use one of {kinds}")
    if plain == DEFAULT_NAME and not slug:
        return default
    known = tuple(sorted({str(doc.name) for _, doc in everything} | {DEFAULT_NAME}))
    raise UnknownBlockError(f"no {what} named {name!r}", known)


class BlockNames(NamedTuple):
    """The names a run may choose among (with the defaults no saved block replaces)."""

    facilities: list[str]
    stores: list[str]
    rucio_stores: list[str]


def block_names() -> BlockNames:
    """The names of the saved facilities and stores, read in one call."""
    documents = _documents({**FACILITIES, **STORES})
    facilities = {str(doc.name) for slug, doc in documents if slug in FACILITIES}
    stores = {str(doc.name) for slug, doc in documents if slug in STORES}
    rucio = {str(doc.name) for slug, doc in documents if slug == "rucio-store"}
    if os.environ.get("RUCIO_CONFIG"):
        stores.add(RUCIO_NAME)
        rucio.add(RUCIO_NAME)
    return BlockNames(
        sorted(facilities | {DEFAULT_NAME}), sorted(stores | {DEFAULT_NAME}), sorted(rucio)
    )


def list_facilities() -> list[FacilityBlock]:
    """Every saved facility, plus the default local one if none is saved as 'local'."""
    return _all(FACILITIES, LocalFacility())


def load_facility(name: str | None = None) -> FacilityBlock:
    """The facility called `name` ('name' or 'block-type/name'); None means 'local'."""
    return _one(FACILITIES, name or DEFAULT_NAME, LocalFacility(), "facility")


def list_stores() -> list[StoreBlock]:
    """Every saved store, and the defaults no saved block replaces.

    The defaults: the local archive as 'local'; with RUCIO_CONFIG set, its Rucio store.
    """
    stores = _all(STORES, LocalArchive())
    configured = rucio_from_config()
    if configured is not None and RUCIO_NAME not in {s.store_name for s in stores}:
        stores.append(configured)
    return stores


def archive_roots() -> list[Path]:
    """The directories the local archives keep results in (resolved, not created)."""
    return [s.directory for s in list_stores() if isinstance(s, LocalArchive)]


def load_store(name: str | None = None) -> StoreBlock:
    """The store called `name`; None means 'local' (the local archive).

    'rucio' is the store of RUCIO_CONFIG unless a block has that name.
    """
    if name == RUCIO_NAME:
        with contextlib.suppress(UnknownBlockError):
            return _one(STORES, name, LocalArchive(), "store")
        configured = rucio_from_config()
        if configured is not None:
            return configured
    return _one(STORES, name or DEFAULT_NAME, LocalArchive(), "store")


def rucio_from_config() -> RucioStore | None:
    """The Rucio store that the standard client configuration (RUCIO_CONFIG) describes.

    It archives to $ESAP_RUCIO_ARCHIVE_RSE; None when RUCIO_CONFIG is not set.
    """
    from blocks.rucio import RucioStore

    config = os.environ.get("RUCIO_CONFIG")
    if not config:
        return None
    if not Path(config).is_file():
        raise UnknownBlockError(f"RUCIO_CONFIG names {config}, which is not a file")
    return RucioStore(archive_rse=os.environ.get(ARCHIVE_RSE_ENV) or None)


def load_rucio_store(name: str | None = None) -> RucioStore:
    """The Rucio store called `name`; with no name, the only saved one, else RUCIO_CONFIG's."""
    from blocks.rucio import RucioStore

    if name:
        store = load_store(name)
        if not isinstance(store, RucioStore):
            raise UnknownBlockError(f"store {name!r} is a {store.kind} store, not a Rucio store")
        return store
    saved = [(cls, doc) for cls, doc in _saved(STORES) if issubclass(cls, RucioStore)]
    if len(saved) > 1:
        names = ", ".join(sorted(str(doc.name) for _, doc in saved))
        raise UnknownBlockError(f"several Rucio stores are saved ({names}): name one")
    if saved:
        return cast(RucioStore, _block(*saved[0]))
    configured = rucio_from_config()
    if configured is None:
        raise UnknownBlockError(
            "no Rucio store is saved and RUCIO_CONFIG is not set: set it to your rucio client "
            "configuration, or add a store with `esap-prefect stores add rucio NAME ...`"
        )
    return configured
