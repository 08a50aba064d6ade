"""Files written whole or not at all: a partial file beside the target, then one rename.

Readers see the old file or the new one, never half of one; secrets get mode 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

PARTIAL = ".partial"
"""The suffix of files being written; readers skip them."""


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary file to write that appears at `path` only when the block ends without error.

    The partial file is created fresh (never through a link left there) with `mode`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}{PARTIAL}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(partial, flags, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> Path:
    """Write `data` (text as UTF-8) to `path` atomically."""
    with atomic_file(path, mode) as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
    return path


def write_json(path: Path, data: object) -> Path:
    """Write `data` as JSON to `path` atomically."""
    return write_atomic(path, json.dumps(data))


def write_secret_file(path: Path, content: str) -> Path:
    """Write `content` readable by the owner only (in a 0700 folder), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return write_atomic(path, content, 0o600)


def read_tail(path: Path, limit: int) -> str:
    """The last `limit` bytes of a text file (from a line's start when cut); "" if absent.

    Links are not followed and only regular files are read (a FIFO would block).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as handle:
        stat = os.fstat(handle.fileno())
        if not S_ISREG(stat.st_mode):
            return ""
        size = stat.st_size
        handle.seek(max(0, size - limit))
        data = handle.read(limit)
    if size > limit:
        data = data.partition(b"\n")[2] or data
    return data.decode(errors="replace")
