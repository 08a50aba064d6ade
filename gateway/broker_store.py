"""The ExecutionBroker's storage: offer sets and their sessions in the gateway's database.

Only SQL and (de)serialisation here; what the documents mean is the broker's business.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.broker_models import OfferSet, Phase, Session
from gateway.database import Database


@dataclass(frozen=True)
class StoredSession:
    """One session as kept: its document and what changes after it was offered."""

    offerset: str
    owner: str
    phase: Phase
    expires: datetime | None
    facility: str
    job_id: str | None
    document: Session


def _session(row: sqlite3.Row) -> StoredSession:
    return StoredSession(
        offerset=row["offerset"],
        owner=row["owner"],
        phase=Phase(row["phase"]),
        expires=datetime.fromisoformat(row["expires"]) if row["expires"] else None,
        facility=row["facility"],
        job_id=row["job_id"],
        document=Session.model_validate_json(row["document"]),
    )


class OfferStore:
    """Offer sets (their heads) and sessions (ranked, one per offer)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def save(
        self, owner: str, offerset: OfferSet, sessions: Sequence[Session], facilities: Sequence[str]
    ) -> None:
        """A new offer set and its sessions, best first, in one transaction."""
        head = offerset.model_copy(update={"offers": []}).model_dump_json()
        with self._db.transaction() as db:
            db.execute(
                "INSERT INTO offersets (uuid, owner, document) VALUES (?, ?, ?)",
                [offerset.uuid, owner, head],
            )
            for rank, (session, facility) in enumerate(zip(sessions, facilities, strict=True)):
                db.execute(
                    "INSERT INTO sessions (uuid, offerset, rank, owner, phase, expires, facility,"
                    " document) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        session.uuid,
                        offerset.uuid,
                        rank,
                        owner,
                        session.phase.value,
                        session.expires.isoformat() if session.expires else "",
                        facility,
                        session.model_dump_json(),
                    ],
                )

    def offerset(self, set_id: str) -> tuple[str, OfferSet] | None:
        """The owner and head (without offers) of an offer set, or None."""
        rows = self._db.rows("SELECT owner, document FROM offersets WHERE uuid = ?", (set_id,))
        if not rows:
            return None
        return rows[0]["owner"], OfferSet.model_validate_json(rows[0]["document"])

    def sessions(self, set_id: str) -> list[StoredSession]:
        """The sessions of an offer set, best first."""
        sql = "SELECT * FROM sessions WHERE offerset = ? ORDER BY rank"
        return [_session(r) for r in self._db.rows(sql, (set_id,))]

    def session(self, session_id: str) -> StoredSession | None:
        """One session, or None."""
        rows = self._db.rows("SELECT * FROM sessions WHERE uuid = ?", (session_id,))
        return _session(rows[0]) if rows else None

    def set_phase(self, session_id: str, phase: Phase) -> None:
        """A session's new phase (REJECTED, CANCELLED)."""
        self._db.execute("UPDATE sessions SET phase = ? WHERE uuid = ?", [phase.value, session_id])

    def accept(self, session_id: str, job_id: str) -> None:
        """The session ACCEPTED with its UWS job; the other offers of its set REJECTED."""
        with self._db.transaction() as db:
            db.execute(
                "UPDATE sessions SET phase = ?, job_id = ? WHERE uuid = ?",
                [Phase.ACCEPTED.value, job_id, session_id],
            )
            db.execute(
                "UPDATE sessions SET phase = ? WHERE uuid != ? AND phase = ? AND offerset = "
                "(SELECT offerset FROM sessions WHERE uuid = ?)",
                [Phase.REJECTED.value, session_id, Phase.OFFERED.value, session_id],
            )
