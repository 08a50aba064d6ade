"""Stores: where a run's outputs are archived. `LocalArchive` keeps them in a directory.

Every archived file carries its size, sha256 and adler32, whatever the store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import BaseModel, ConfigDict, Field

from core.checksums import digest
from core.files import PARTIAL
from core.job_folder import copy_fd, open_file
from core.jobs import OutputFile, relative_path
from core.settings import home


class ArchivedFile(BaseModel):
    """One file in a store, with what is needed to check it later."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    size: int
    sha256: str
    adler32: str
    location: str = Field(description="URI of the archived copy.")


class StoreBlock(Block, ABC):
    """A data service that can keep a run's outputs."""

    kind: ClassVar[str] = ""

    @property
    def store_name(self) -> str:
        """The saved block's name, or the store kind for an unsaved default."""
        return self._block_document_name or self.kind

    @abstractmethod
    def archive(self, run_key: str, files: Sequence[OutputFile]) -> list[ArchivedFile]:
        """Keep `files` under `run_key`; archiving the same files again changes nothing."""

    @abstractmethod
    def existing(self, run_key: str) -> list[str]:
        """Names of the files already kept under `run_key` (empty if none)."""


class LocalArchive(StoreBlock):
    """Archives outputs into a directory: <root>/<run key>/<job name>/<file>.

    Example:
        ```python
        from blocks import LocalArchive

        archive = LocalArchive.load("local")  # this block, in your code
        LocalArchive(root="/data/esap-results").save("shared")  # another, under a new name
        ```
    """

    _block_type_name = "Local Archive"
    _description = "Keeps ESAP run outputs in a local directory, with checksums."

    kind: ClassVar[str] = "local"
    root: Path | None = Field(
        default=None, description="Results directory; default $ESAP_PREFECT_HOME/results."
    )

    @property
    def directory(self) -> Path:
        """Where results go (resolved; made on first archive)."""
        return (self.root or home() / "results").expanduser().resolve()

    def _root(self) -> Path:
        root = self.directory
        root.mkdir(parents=True, exist_ok=True)
        return root

    def archive(self, run_key: str, files: Sequence[OutputFile]) -> list[ArchivedFile]:
        """Copy each file in atomically, skipping copies already there with the same sha256.

        Only regular files are archived: a link is refused (UnsafeFile), never followed.
        """
        base = self._root() / relative_path(run_key)
        archived = []
        for item in files:
            target = base / relative_path(item.name)
            source = digest(item.path)
            if not (target.exists() and digest(target).sha256 == source.sha256):
                with open_file(item.path) as fd:
                    copy_fd(fd, target)
            archived.append(
                ArchivedFile(
                    name=item.name,
                    size=source.size,
                    sha256=source.sha256,
                    adler32=source.adler32,
                    location=target.as_uri(),
                )
            )
        return archived

    def existing(self, run_key: str) -> list[str]:
        """Files under <root>/<run key>, as names relative to it."""
        base = self._root() / relative_path(run_key)
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(base).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(PARTIAL)
        )
