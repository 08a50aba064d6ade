"""ESAP Hello World payload: echo the job's parameters as JSON with "type": "batch.submit".

Usage: python3 hello_world.py PARAMETERS.json OUTPUT.json (standard library only).
"""

import json
import os
import sys
import zlib
from typing import Any
from urllib.parse import urlparse


def _read(entry: dict[str, Any]) -> bytes | None:
    """The input's bytes: its copy in the job directory, or its file:// PFN; None if remote."""
    if entry.get("path"):
        with open(entry["path"], "rb") as handle:
            return handle.read()
    pfn = urlparse(entry.get("pfn") or "")
    if pfn.scheme == "file" and os.path.isfile(pfn.path):
        with open(pfn.path, "rb") as handle:
            return handle.read()
    return None


def _inputs() -> list[dict[str, Any]]:
    """What the job received (inputs.json, when the run had inputs), each file read back."""
    if not os.path.exists("inputs.json"):
        return []
    with open("inputs.json") as handle:
        manifest = json.load(handle)
    seen = []
    for entry in manifest["rucio"] + manifest["vo"]:
        data = _read(entry)
        seen.append(
            {
                "name": entry.get("did") or entry["path"],
                "bytes": None if data is None else len(data),
                "adler32": None if data is None else f"{zlib.adler32(data):08x}",
            }
        )
    return seen


def main() -> None:
    """Read the parameter file ESAP's form wrote; write it back with the job type."""
    source, target = sys.argv[1], sys.argv[2]
    with open(source) as handle:
        parameters = json.load(handle)
    echoed = {**parameters, "type": "batch.submit"}
    inputs = _inputs()
    if inputs:
        echoed["inputs"] = inputs
    with open(target, "w") as handle:
        json.dump(echoed, handle, indent=2, sort_keys=True)
    print(json.dumps(echoed, sort_keys=True))


if __name__ == "__main__":
    main()
