"""Checksums of files as data services record them: sha256, md5 and Rucio-style adler32.

One streaming pass computes all of them.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from core.job_folder import open_file

_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileDigest:
    """Size and checksums of one file."""

    size: int
    sha256: str
    md5: str
    adler32: str


def digest(path: Path) -> FileDigest:
    """Size, sha256, md5 and adler32 (8 lowercase hex digits, as Rucio writes it).

    Raises:
        UnsafeFile: `path` is a link or not a regular file.
    """
    sha = hashlib.sha256()
    md5 = hashlib.md5(usedforsecurity=False)
    adler = 1
    size = 0
    with open_file(path) as fd, os.fdopen(os.dup(fd), "rb") as handle:
        while chunk := handle.read(_CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            adler = zlib.adler32(chunk, adler)
            size += len(chunk)
    return FileDigest(size, sha.hexdigest(), md5.hexdigest(), f"{adler & 0xFFFFFFFF:08x}")
