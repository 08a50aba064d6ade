"""Container recipes and job payloads, shipped inside the package (not read from a clone).

`payload(name)` is the path of a payload script wherever the package is installed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def payload(name: str) -> Path:
    """The file of payload `name` (e.g. "hello_world.py") among the installed payloads."""
    path = Path(str(resources.files(__name__) / "payloads" / name))
    if not path.is_file():
        raise FileNotFoundError(f"no payload {name} in {path.parent}")
    return path
