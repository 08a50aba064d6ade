"""Finding facilities and stores by name among the blocks saved in Prefect.

With nothing saved, the embedded defaults (a local facility and a local archive) are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar, cast

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

from blocks.archive import LocalArchive, StoreBlock
from blocks.facility import FacilityBlock
from blocks.local import LocalFacility
from core.errors import UnknownBlockError

if TYPE_CHECKING:
    from blocks.rucio import RucioStore

B = TypeVar("B", FacilityBlock, StoreBlock)

DEFAULT_NAME = "local"


def _saved(types: tuple[type[B], ...]) -> list[tuple[type[B], str]]:
    found: list[tuple[type[B], str]] = []
    with get_client(sync_client=True) as client:
        for cls in types:
            try:
                documents = client.read_block_documents_by_type(cls.get_block_type_slug())
            except ObjectNotFound:
                continue
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code == 404:  # a server that never saw this type
                    continue
                raise
            found.extend((cls, doc.name) for doc in documents if doc.name)
    return found


def _load(cls: type[B], name: str) -> B:
    # Block.load is sync/async dual-dispatch; called from sync code it returns the block.
    return cast(B, cls.load(name))


def _all(types: tuple[type[B], ...], default: B) -> list[B]:
    blocks = [_load(cls, name) for cls, name in _saved(types)]
    names = {getattr(b, "_block_document_name", None) for b in blocks}
    if DEFAULT_NAME not in names:
        blocks.insert(0, default)
    return blocks


def _one(types: tuple[type[B], ...], name: str, default: B, what: str) -> B:
    slug, _, plain = name.rpartition("/")
    everything = _saved(types)
    saved = [
        (cls, n)
        for cls, n in everything
        if n == plain and (not slug or cls.get_block_type_slug() == slug)
    ]
    if len(saved) == 1:
        cls, found = saved[0]
        return _load(cls, found)
    if len(saved) > 1:
        kinds = ", ".join(f"{cls.get_block_type_slug()}/{n}" for cls, n in saved)
        raise UnknownBlockError(f"{what} name {name!r} is ambiguous: use one of {kinds}")
    if plain == DEFAULT_NAME and not slug:
        return default
    known = tuple(sorted({n for _, n in everything} | {DEFAULT_NAME}))
    raise UnknownBlockError(f"no {what} named {name!r}", known)


def facility_types() -> tuple[type[FacilityBlock], ...]:
    """Every facility block type this project provides."""
    from blocks.catalogue import FACILITY_TYPES

    return FACILITY_TYPES


def store_types() -> tuple[type[StoreBlock], ...]:
    """Every store block type this project provides."""
    from blocks.catalogue import STORE_TYPES

    return STORE_TYPES


def list_facilities() -> list[FacilityBlock]:
    """Every saved facility, plus the default local one if none is saved as 'local'."""
    return _all(facility_types(), LocalFacility())


def load_facility(name: str | None = None) -> FacilityBlock:
    """The facility called `name` ('name' or 'block-type/name'); None means 'local'."""
    return _one(facility_types(), name or DEFAULT_NAME, LocalFacility(), "facility")


def list_stores() -> list[StoreBlock]:
    """Every saved store, plus the default local archive if none is saved as 'local'."""
    return _all(store_types(), LocalArchive())


def load_store(name: str | None = None) -> StoreBlock:
    """The store called `name`; None means 'local' (the local archive)."""
    return _one(store_types(), name or DEFAULT_NAME, LocalArchive(), "store")


def load_rucio_store(name: str | None = None) -> RucioStore:
    """The Rucio store called `name`; with no name, the only saved one."""
    from blocks.rucio import RucioStore

    if name:
        store = load_store(name)
        if not isinstance(store, RucioStore):
            raise UnknownBlockError(f"store {name!r} is a {store.kind} store, not a Rucio store")
        return store
    saved = [n for cls, n in _saved(store_types()) if issubclass(cls, RucioStore)]
    if len(saved) != 1:
        raise UnknownBlockError(
            "no Rucio store is saved: add one with `esap-prefect stores add rucio NAME ...`"
            if not saved
            else f"several Rucio stores are saved ({', '.join(sorted(saved))}): name one"
        )
    return cast(RucioStore, RucioStore.load(saved[0]))
