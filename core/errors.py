"""Errors facilities and stores raise, split by whether retrying can help.

Tasks retry `TransientError`s and other surprises, never a `FatalError`.
"""

from __future__ import annotations

import re

_PREFECT = re.compile(r"^(?:Flow run encountered an exception|Task run failed)[^:]*:\s*")
# a Python exception's class name: CamelCase of two words or more ("JobsFailed: ...")
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?(?:[A-Z][a-z0-9]+){2,}\w*:\s*|^Exception:\s*")


def plain_message(text: str) -> str:
    """A failed run's message without Prefect's preamble and the exception's class name.

    "Flow run encountered an exception: PlanningError: no facility can run ..." becomes
    "no facility can run ...".
    """
    return _EXCEPTION.sub("", _PREFECT.sub("", text.strip()))


class FatalError(Exception):
    """Retrying cannot help: bad input, refused credentials, an answer that will not change."""


class TransientError(Exception):
    """The backend could not be reached or answered 5xx; the same call may work later."""


class JobRefused(FatalError, ValueError):
    """A facility cannot take a job spec; raised before anything is submitted.

    The spec is over the facility's limits, of a kind it does not run, or its name was
    used for another spec.
    """


class CredentialsError(FatalError, PermissionError):
    """The backend refused the credentials (expired, revoked or wrong)."""


class UnknownBlockError(FatalError, LookupError):
    """No saved facility or store has the name asked for.

    The message names only what was asked for (it may reach other users); `known` holds
    the names that exist, for operators' tools to show.
    """

    def __init__(self, message: str, known: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.known = known
