"""Errors facilities and stores raise, split by whether retrying can help.

Tasks retry `TransientError`s and other surprises, never a `FatalError`.
"""

from __future__ import annotations


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
