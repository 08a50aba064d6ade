"""What a gateway user may read of an internal error: no host paths, no exception class names.

Operators see the whole message in the Prefect UI; UWS clients see it through here.
"""

from __future__ import annotations

import re

from core.errors import plain_message
from core.params import printable

MAX_MESSAGE = 1000
_FILE_URL = re.compile(r"file://\S*")
_HOST_PATH = re.compile(r"(?<![\w:/.~-])(?:/[\w.@%+=~-]+)+/?")


def _last(match: re.Match[str]) -> str:
    return ".../" + match.group().rstrip("/").rsplit("/", 1)[-1]


def public_message(text: str) -> str:
    """`text` as users may see it: printable, host paths cut to their last name, 1,000 characters.

    "Flow run encountered an exception: FatalError: image /srv/x.sif is not ..." becomes
    "image .../x.sif is not ...".
    """
    text = plain_message(printable(text))
    text = _FILE_URL.sub(_last, text)
    text = _HOST_PATH.sub(_last, text)
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 3] + "..."
    return text
