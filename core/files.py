"""Files that hold secrets (credentials, client configurations): owner-only, written atomically.

Backends that need a credentials file on disk write it here, never in logs or arguments.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_secret_file(path: Path, content: str) -> Path:
    """Write `content` readable by the owner only, replacing the file atomically."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    partial.replace(path)
    return path
