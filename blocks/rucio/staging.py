"""Stage-in with Rucio: a rule to the target RSE (reused if there is one), wait, then hand over.

Jobs get replica PFNs at the target RSE or downloaded, checksum-verified copies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from blocks.rucio.dids import Did
from blocks.rucio.session import rucio_logger, unreachable
from core import settings
from core.backoff import Backoff, Outage
from core.errors import FatalError, TransientError

SHOWN = 20


class StagingError(FatalError):
    """Staging cannot finish: the files named are stuck, missing, or never arrived."""

    def __init__(self, message: str, files: Sequence[str]) -> None:
        shown = ", ".join(files[:SHOWN]) + (
            f" and {len(files) - SHOWN} more" if len(files) > SHOWN else ""
        )
        super().__init__(f"{message}: {shown}" if files else message)
        self.files = list(files)


class StageProgress(BaseModel):
    """Where the rules stand: file locks OK, replicating and stuck."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: int
    replicating: int
    stuck: int
    elapsed: float

    @property
    def total(self) -> int:
        """All locks of the rules."""
        return self.ok + self.replicating + self.stuck


class StagedFile(BaseModel):
    """One input file at the target RSE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    did: str
    size: int
    adler32: str | None
    md5: str | None
    rse: str
    pfn: str | None
    path: Path | None = None


class Rule(BaseModel):
    """The rule that holds a staged DID at the target RSE."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    did: str
    rule_id: str
    reused: bool


def resolve(client: Any, dids: Sequence[Did]) -> dict[Did, str]:
    """Each DID's type (FILE, DATASET, CONTAINER); unknown DIDs are a StagingError naming all."""
    from rucio.common.exception import DataIdentifierNotFound

    kinds: dict[Did, str] = {}
    missing = []
    for did in dids:
        try:
            kinds[did] = str(client.get_did(did.scope, did.name)["type"]).upper()
        except DataIdentifierNotFound:
            missing.append(str(did))
    if missing:
        raise StagingError("Rucio knows no such data identifier", missing)
    return kinds


def ensure_rule(client: Any, did: Did, rse: str, lifetime: int | None) -> Rule:
    """The rule of this account for `did` on `rse`: the existing one, else a new one.

    A reused rule that would expire before `lifetime` is extended.
    """
    from rucio.common.exception import DuplicateRule

    for rule in client.list_did_rules(did.scope, did.name):
        if rule["account"] == client.account and rule["rse_expression"] == rse:
            _extend(client, rule, lifetime)
            return Rule(did=str(did), rule_id=rule["id"], reused=True)
    try:
        [rule_id] = client.add_replication_rule([did.as_dict()], 1, rse, lifetime=lifetime)
    except DuplicateRule:  # another worker added it between our look and our add
        return ensure_rule(client, did, rse, lifetime)
    return Rule(did=str(did), rule_id=rule_id, reused=False)


def _extend(client: Any, rule: dict[str, Any], lifetime: int | None) -> None:
    expires = rule.get("expires_at")
    if expires is None:
        return
    if isinstance(expires, str):
        expires = datetime.fromisoformat(expires)
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    if lifetime is None:
        client.update_replication_rule(rule["id"], {"lifetime": None})
        return
    # a tenth of slack, so staging again right away does not rewrite the rule each time
    if expires < datetime.now(UTC) + timedelta(seconds=0.9 * lifetime):
        client.update_replication_rule(rule["id"], {"lifetime": lifetime})


def _locks(client: Any, rule_id: str, states: set[str]) -> list[str]:
    return [
        f"{lock['scope']}:{lock['name']}"
        for lock in client.list_replica_locks(rule_id)
        if str(lock["state"]).upper() in states
    ]


def wait_for_rules(
    client: Any,
    rules: Sequence[Rule],
    rse: str,
    *,
    timeout: float,
    poll_interval: float = 2.0,
    max_interval: float = 30.0,
    progress: Callable[[StageProgress], None] | None = None,
    outage_limit: float | None = None,
    warn: Callable[[str], None] | None = None,
) -> StageProgress:
    """Poll the rules until all are OK; STUCK or the timeout is a StagingError listing files.

    One request per rule and cycle: the first ten cycles `poll_interval` apart (staging
    from nearby disk is quick), then growing by a quarter up to `max_interval`. While Rucio
    cannot be reached polling goes on (`warn` told each cycle) for up to `outage_limit`
    seconds (`ESAP_PREFECT_OUTAGE_LIMIT`), then a TransientError; the rules stay.
    """
    outage = Outage(settings.outage_limit() if outage_limit is None else outage_limit)
    started = time.monotonic()
    pause = Backoff(poll_interval, max_interval, factor=1.25, steady=10)
    while True:
        try:
            infos = [client.get_replication_rule(rule.rule_id) for rule in rules]
        except Exception as exc:
            if not unreachable(exc):
                raise
            away = outage.away()
            if away > outage.limit:
                raise TransientError(
                    f"Rucio could not be reached for {away:.0f} s while waiting for staging "
                    f"to {rse} (limit {outage.limit:g} s); the rules stay, so staging again picks "
                    "them up"
                ) from exc
            if warn is not None:
                warn(f"Rucio cannot be reached (for {away:.0f} s); staging to {rse} waits")
            time.sleep(pause.step())
            continue
        outage.over()
        now = StageProgress(
            ok=sum(i["locks_ok_cnt"] for i in infos),
            replicating=sum(i["locks_replicating_cnt"] for i in infos),
            stuck=sum(i["locks_stuck_cnt"] for i in infos),
            elapsed=time.monotonic() - started,
        )
        if progress is not None:
            progress(now)
        stuck_rules = [
            (rule, info.get("error") or "no reason given")
            for rule, info in zip(rules, infos, strict=True)
            if str(info["state"]).upper() == "STUCK"
        ]
        if stuck_rules:
            files = [f for rule, _ in stuck_rules for f in _locks(client, rule.rule_id, {"STUCK"})]
            reasons = "; ".join(sorted({why for _, why in stuck_rules}))
            raise StagingError(
                f"{len(files)} file(s) cannot reach {rse} (rule STUCK: {reasons})", files
            )
        if all(str(info["state"]).upper() == "OK" for info in infos):
            return now
        if now.elapsed >= timeout:
            files = [f for rule in rules for f in _locks(client, rule.rule_id, {"REPLICATING"})]
            raise StagingError(
                f"staging to {rse} did not finish within {timeout:g} s ({now.ok} of "
                f"{now.total} file(s) there; the rules stay, so staging again picks them up); "
                "still replicating",
                files,
            )
        time.sleep(min(pause.step(), max(0.0, timeout - now.elapsed)))


def replicas(client: Any, dids: Sequence[Did], rse: str | None) -> list[StagedFile]:
    """Every file of `dids` with a PFN at `rse` (any RSE when None); files with none fail."""
    files = []
    missing = []
    for replica in client.list_replicas([d.as_dict() for d in dids], rse_expression=rse):
        did = f"{replica['scope']}:{replica['name']}"
        held = {name: pfns for name, pfns in (replica.get("rses") or {}).items() if pfns}
        where = rse if rse is not None else next(iter(sorted(held)), None)
        if where is None or where not in held:
            missing.append(did)
            continue
        files.append(
            StagedFile(
                did=did,
                size=replica["bytes"],
                adler32=replica.get("adler32"),
                md5=replica.get("md5"),
                rse=where,
                pfn=held[where][0],
            )
        )
    if missing:
        place = f"at {rse}" if rse else "anywhere"
        raise StagingError(f"{len(missing)} file(s) have no available replica {place}", missing)
    if not files:
        raise StagingError(f"nothing to stage: {', '.join(map(str, dids))} hold no files", [])
    return sorted(files, key=lambda f: f.did)


def complete_copies(client: Any, dids: Sequence[Did]) -> list[str]:
    """RSEs holding every file of `dids`, then those holding most of them."""
    counts: dict[str, int] = {}
    total = 0
    for replica in client.list_replicas([d.as_dict() for d in dids]):
        total += 1
        for name, pfns in (replica.get("rses") or {}).items():
            if pfns:
                counts[name] = counts.get(name, 0) + 1
    ranked = sorted(counts, key=lambda name: (-counts[name], name))
    whole = [name for name in ranked if counts[name] == total]
    return whole or ranked


def download(
    client: Any, dids: Sequence[Did], files: Sequence[StagedFile], rse: str | None, dest: Path
) -> list[StagedFile]:
    """Download `files` (all of `dids`) from `rse` (any when None) into `dest`/<scope>/<name>.

    One download item per DID, so rucio-clients resolves datasets in one call; checksums are
    verified; files already there and whole are not fetched again. Failures name every file.
    """
    from rucio.client.downloadclient import DownloadClient

    for item in files:
        # rucio-clients does not create the directories of names that hold a "/"
        (dest / item.did.replace(":", "/", 1)).parent.mkdir(parents=True, exist_ok=True)
    downloader = DownloadClient(client=client, logger=rucio_logger("download"), tracing=False)
    items = [
        {"did": str(did), "rse": rse, "base_dir": str(dest / did.scope), "no_subdir": True}
        for did in dict.fromkeys(dids)
    ]
    results = downloader.download_dids(items, deactivate_file_download_exceptions=True)
    by_did = {f"{r['scope']}:{r['name']}": r for r in results}
    failed = [
        f.did
        for f in files
        if by_did.get(f.did, {}).get("clientState") not in ("DONE", "ALREADY_DONE")
    ]
    if failed:
        raise StagingError(f"{len(failed)} file(s) could not be downloaded", sorted(failed))
    return [f.model_copy(update={"path": Path(by_did[f.did]["dest_file_paths"][0])}) for f in files]


class StagedInputs(BaseModel):
    """What a stage-in gave: the rules holding the data at `rse` and every file there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rse: str
    rules: list[Rule]
    files: list[StagedFile]

    @property
    def total_bytes(self) -> int:
        """Bytes staged."""
        return sum(f.size for f in self.files)
