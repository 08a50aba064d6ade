"""What a job left in its folder, read as a hostile job may have left it.

Only regular files inside the folder are taken: no link is followed, nothing is opened
that is not a regular file, and every path is walked with O_NOFOLLOW from the folder down.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from core.errors import FatalError
from core.files import atomic_file
from core.params import ParameterError, check_text, printable

MAX_ENTRIES = 200_000
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20


class UnsafeFile(FatalError):
    """A path a job left that is not a regular file inside its folder; the message names it."""


@dataclass(frozen=True)
class OutputScan:
    """Regular files matching the output patterns, entries refused, patterns unmatched."""

    files: list[str]
    refused: list[str]
    missing: list[str]


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _parts(relative: str) -> tuple[str, ...]:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts or "\x00" in relative:
        raise UnsafeFile(f"{relative!r} is not a relative path inside the job's folder")
    return parts


@contextlib.contextmanager
def _directory(folder: Path, parts: Sequence[str] = ()) -> Iterator[int]:
    """An fd of folder/parts..., each step opened without following a link."""
    fd = os.open(folder, _DIR)
    try:
        for index, part in enumerate(parts):
            try:
                step = os.open(part, _DIR, dir_fd=fd)
            except OSError as exc:
                where = "/".join(parts[: index + 1])
                try:
                    mode = os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode
                except OSError:
                    raise UnsafeFile(f"{where}: {exc.strerror or exc}") from None
                raise UnsafeFile(f"{where}: {_kind(mode)}") from None
            os.close(fd)
            fd = step
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_regular(folder: Path, relative: str) -> Iterator[int]:
    """folder/relative opened for reading: UnsafeFile unless it is a regular file inside.

    No component is followed through a link; special files (FIFOs, devices) are never opened.
    """
    *dirs, name = _parts(relative)
    with _directory(folder, dirs) as parent:
        try:
            before = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise UnsafeFile(f"{relative}: no such file") from None
        if not stat.S_ISREG(before.st_mode):
            raise UnsafeFile(f"{relative}: {_kind(before.st_mode)}")
        fd = os.open(name, _FILE, dir_fd=parent)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino) or not stat.S_ISREG(
            now.st_mode
        ):
            raise UnsafeFile(f"{relative}: changed while it was opened")
        os.set_blocking(fd, True)
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_file(path: Path) -> Iterator[int]:
    """A regular file opened for reading, its last component not followed if it is a link."""
    with open_regular(path.parent, path.name) as fd:
        yield fd


def _same_file(target: Path, info: os.stat_result) -> bool:
    try:
        there = os.stat(target, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (there.st_dev, there.st_ino) == (info.st_dev, info.st_ino)


def copy_fd(fd: int, target: Path) -> None:
    """Copy an open file to `target` atomically (a partial file, then a rename)."""
    with os.fdopen(os.dup(fd), "rb") as source, atomic_file(target) as out:
        source.seek(0)
        shutil.copyfileobj(source, out, _CHUNK)


def place(folder: Path, relative: str, target: Path) -> Path:
    """Hard-link (or copy) the regular file folder/relative to `target`.

    The very file opened is linked (through /proc/self/fd), so nothing can be swapped in
    between the check and the link. A file with other names (a hard link the job made to
    something else) is refused, unless its other name is `target` from an earlier placing.

    Raises:
        UnsafeFile: naming the file, when it is not a regular file inside `folder`.
    """
    with open_regular(folder, relative) as fd:
        info = os.fstat(fd)
        if _same_file(target, info):
            return target
        if info.st_nlink > 1:
            raise UnsafeFile(f"{relative}: a hard link ({info.st_nlink} names)")
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        try:
            os.link(f"/proc/self/fd/{fd}", target)
        except OSError:
            copy_fd(fd, target)
    return target


def _walk(folder: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """Every regular file under `folder`, and what every other entry is; no link is followed."""
    files: list[str] = []
    others: list[tuple[str, str]] = []
    pending: list[tuple[str, ...]] = [()]
    seen = 0
    while pending:
        parts = pending.pop()
        with _directory(folder, parts) as fd, os.scandir(fd) as entries:
            for entry in entries:
                seen += 1
                if seen > MAX_ENTRIES:
                    raise UnsafeFile(f"the job's folder holds more than {MAX_ENTRIES} entries")
                relative = (*parts, entry.name)
                if entry.is_symlink():
                    others.append(("/".join(relative), "a symbolic link"))
                elif not _printable(entry.name):
                    others.append(("/".join(relative), "a name with control characters"))
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(relative)
                elif entry.is_file(follow_symlinks=False):
                    files.append("/".join(relative))
                else:
                    others.append(("/".join(relative), "not a regular file"))
    return files, others


def _printable(name: str) -> bool:
    try:
        check_text(name, "name", 255)
    except ParameterError:
        return False
    return True


def _segment(name: str, pattern: str) -> bool:
    # as glob: wildcards do not match a leading dot
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatchcase(name, pattern)


def glob_match(path: str, pattern: str, *, below: bool = False) -> bool:
    """Whether a relative path matches a glob pattern (`**` for any number of folders).

    With `below`, whether the pattern could match something inside the folder `path`.
    """
    names, wanted = path.split("/"), pattern.split("/")

    @functools.cache
    def match(i: int, j: int) -> bool:
        if i == len(names):
            return j == len(wanted) if not below else j < len(wanted)
        if j == len(wanted):
            return False
        if wanted[j] == "**":
            return match(i, j + 1) or (not names[i].startswith(".") and match(i + 1, j))
        return _segment(names[i], wanted[j]) and match(i + 1, j + 1)

    return match(0, 0)


def scan_outputs(folder: Path, patterns: Sequence[str]) -> OutputScan:
    """The regular files of `folder` that match `patterns`, and what was refused.

    A link, FIFO, socket or device that a pattern matches (or a link a pattern would lead
    through) is refused with its reason; nothing is followed, so a link to `/` costs nothing.
    """
    files, others = _walk(folder)
    matched: set[str] = set()
    refused: dict[str, str] = {}
    missing = []
    for pattern in patterns:
        hits = {f for f in files if glob_match(f, pattern)}
        bad = {
            path: why
            for path, why in others
            if glob_match(path, pattern)
            or (why == "a symbolic link" and glob_match(path, pattern, below=True))
        }
        if not hits and not bad:
            missing.append(pattern)
        matched |= hits
        refused.update(bad)
    return OutputScan(
        files=sorted(matched),
        refused=[f"{printable(path)}: {why}" for path, why in sorted(refused.items())],
        missing=missing,
    )
