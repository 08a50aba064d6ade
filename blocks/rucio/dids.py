"""Rucio data identifiers as users type them: `scope:name`, or a name in the default scope.

Wildcards are refused: a job's inputs must be named, not searched for.
"""

from __future__ import annotations

import re
from typing import Self

from pydantic import BaseModel, ConfigDict

from core.errors import FatalError

_SCOPE = re.compile(r"^[A-Za-z0-9._-]{1,25}$")
_WILDCARDS = set("*?[]%")


class Did(BaseModel):
    """One data identifier (file, dataset or container)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scope: str
    name: str

    def __str__(self) -> str:
        return f"{self.scope}:{self.name}"

    @classmethod
    def parse(cls, text: str, default_scope: str) -> Self:
        """`scope:name` or `name` (in `default_scope`); a clear FatalError otherwise."""
        value = text.strip()
        if not value:
            raise FatalError("an empty data identifier was given")
        if _WILDCARDS & set(value):
            raise FatalError(
                f"{text!r} contains a wildcard; name the files, datasets or containers to "
                "stage (list them with `rucio list-dids` first)"
            )
        scope, sep, name = value.partition(":")
        if not sep:
            scope, name = default_scope, value
        if not _SCOPE.fullmatch(scope) or not name or ":" in name or any(c.isspace() for c in name):
            raise FatalError(f"{text!r} is not a data identifier; write scope:name")
        return cls(scope=scope, name=name)

    def as_dict(self) -> dict[str, str]:
        """The `{"scope": ..., "name": ...}` form rucio-clients takes."""
        return {"scope": self.scope, "name": self.name}
