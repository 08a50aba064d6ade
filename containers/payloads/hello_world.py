"""ESAP Hello World payload: echo the job's parameters as JSON with "type": "batch.submit".

Usage: python3 hello_world.py PARAMETERS.json OUTPUT.json (standard library only).
"""

import json
import sys


def main() -> None:
    """Read the parameter file ESAP's form wrote; write it back with the job type."""
    source, target = sys.argv[1], sys.argv[2]
    with open(source) as handle:
        parameters = json.load(handle)
    echoed = {**parameters, "type": "batch.submit"}
    with open(target, "w") as handle:
        json.dump(echoed, handle, indent=2, sort_keys=True)
    print(json.dumps(echoed, sort_keys=True))


if __name__ == "__main__":
    main()
