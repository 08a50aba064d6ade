"""The Rucio store: stage inputs in from the ESCAPE data lake and archive outputs to it.

Uses rucio-clients (Client, UploadClient, DownloadClient); credentials stay in private files.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr

from blocks.archive import ArchivedFile, StoreBlock
from blocks.rucio.dids import Did
from blocks.rucio.session import rucio_client, rucio_logger, write_client_config
from blocks.rucio.staging import (
    StagedInputs,
    StageProgress,
    complete_copies,
    download,
    ensure_rule,
    replicas,
    resolve,
    wait_for_rules,
)
from core.checksums import digest
from core.errors import FatalError
from core.jobs import OutputFile, relative_path
from core.units import Duration


class RucioStore(StoreBlock):
    """Archives run outputs to Rucio, one dataset per run.

    Stage-in puts a rule of this account on the target RSE (reusing one it has), waits for
    it and hands over PFNs or downloaded files. Archive uploads outputs with checksums into
    the run's dataset, which gets a rule with the configured lifetime on the archive RSE.

    With no host given, the standard `RUCIO_CONFIG` file is used as it is.

    Example:
        ```python
        from blocks import RucioStore

        store = RucioStore.load("lake")  # this block, in your code
        RucioStore(rucio_host="https://rucio.example.org", account="esap",  # another one
                   username="esap", password="...", archive_rse="CTAO_ARCHIVE").save("lake2")
        ```
    """

    _block_type_name = "Rucio Store"
    _description = "Archives ESAP run outputs to a Rucio data lake, with checksums."

    kind: ClassVar[str] = "rucio"
    rucio_host: str | None = Field(
        default=None, description="Rucio server; default from RUCIO_CONFIG."
    )
    auth_host: str | None = Field(default=None, description="Auth server; default rucio_host.")
    account: str | None = Field(
        default=None, description="Rucio account the store acts as; default the identity's."
    )
    auth_type: Literal["userpass", "token", "x509_proxy"] = Field(
        default="userpass",
        description="How to authenticate: userpass, token (OIDC/WLCG bearer) or x509_proxy.",
    )
    username: str | None = Field(default=None, description="User name, for userpass.")
    password: SecretStr | None = Field(default=None, description="Password, for userpass.")
    token: SecretStr | None = Field(
        default=None, description="Bearer token (an OIDC/WLCG token or a Rucio token)."
    )
    proxy_path: Path | None = Field(default=None, description="X.509 proxy for x509_proxy.")
    ca_cert: Path | None = Field(
        default=None, description="CA bundle to check the Rucio servers' certificates with."
    )
    scope: str = Field(
        default="esap",
        pattern=r"^[A-Za-z0-9._-]{1,25}$",
        description="Scope of archived outputs, and of DIDs given without one.",
    )
    archive_rse: str | None = Field(
        default=None,
        min_length=1,
        description="RSE the outputs are uploaded to (needed to archive, not to stage).",
    )
    send_traces: bool = Field(
        default=True,
        description="Send upload traces (Rucio's popularity data); off for servers without "
        "a trace broker, which answer them slowly.",
    )
    rule_lifetime: Duration | None = Field(
        default="30d",
        validate_default=True,
        description="Lifetime of archive and staging rules; empty for no expiry.",
    )

    def _config_file(self) -> Path | None:
        if not self.rucio_host:
            return None
        settings = {
            "rucio_host": self.rucio_host,
            "auth_host": self.auth_host or self.rucio_host,
            # rucio-clients takes bearer tokens under its OIDC auth type
            "auth_type": "oidc" if self.auth_type == "token" else self.auth_type,
            "account": self.account or "",
            "request_retries": "2",
        }
        if self.username:
            settings["username"] = self.username
        if self.password:
            settings["password"] = self.password.get_secret_value()
        if self.proxy_path:
            settings["client_x509_proxy"] = str(self.proxy_path)
        if self.ca_cert:
            settings["ca_cert"] = str(self.ca_cert)
        return write_client_config(settings, self._token())

    def _token(self) -> str | None:
        if self.auth_type != "token":
            return None
        if self.token is None:
            raise FatalError("Rucio store: auth_type token needs a token")
        return self.token.get_secret_value()

    @contextlib.contextmanager
    def _client(self, what: str) -> Iterator[Any]:
        """A rucio Client under this store's configuration; errors translated."""
        with rucio_client(self._config_file(), what, self._token()) as client:
            yield client

    def _dataset(self, run_key: str) -> str:
        return relative_path(run_key).replace("/", ".")

    def _listed(self, client: Any, dataset: str) -> dict[str, dict[str, Any]] | None:
        """The dataset's files by name, or None when there is no such dataset."""
        from rucio.common.exception import DataIdentifierNotFound

        try:
            return {f["name"]: f for f in client.list_files(self.scope, dataset)}
        except DataIdentifierNotFound:
            return None

    def existing(self, run_key: str) -> list[str]:
        """Files of the run's dataset, as names relative to the run key."""
        prefix = f"{relative_path(run_key)}/"
        with self._client("list an archived run") as client:
            names = self._listed(client, self._dataset(run_key)) or {}
        return sorted(n.removeprefix(prefix) for n in names)

    def archive(self, run_key: str, files: Sequence[OutputFile]) -> list[ArchivedFile]:
        """Upload new files (checksums verified), attach them to the run's dataset, add the rule.

        Files already in the dataset with the same adler32 are not uploaded again; a file of
        the same name with other content is an error, since Rucio files never change.
        """
        from rucio.client.uploadclient import UploadClient

        if self.archive_rse is None:
            raise FatalError(
                f"Rucio store {self.store_name} has no archive RSE: set one on the block, or "
                "$ESAP_RUCIO_ARCHIVE_RSE for the store of RUCIO_CONFIG"
            )
        dataset = self._dataset(run_key)
        archived = []
        with self._client("archive outputs") as client:
            listed = self._listed(client, dataset)
            present = listed or {}
            uploads = []
            for item in files:
                name = f"{relative_path(run_key)}/{relative_path(item.name)}"
                local = digest(item.path)
                known = present.get(name)
                if known is not None and known.get("adler32") != local.adler32:
                    raise FatalError(
                        f"{self.scope}:{name} is already archived with other "
                        "content; Rucio files cannot change"
                    )
                if known is None:
                    uploads.append(
                        {
                            "path": str(item.path),
                            "rse": self.archive_rse,
                            "did_scope": self.scope,
                            "did_name": name,
                            "dataset_scope": self.scope,
                            "dataset_name": dataset,
                            "register_after_upload": True,
                            # Rucio applies a lifetime only when the upload creates the dataset.
                            **({"lifetime": self.rule_lifetime} if listed is None else {}),
                        }
                    )
                archived.append(
                    ArchivedFile(
                        name=item.name,
                        size=local.size,
                        sha256=local.sha256,
                        adler32=local.adler32,
                        location=f"rucio:{self.scope}:{name}",
                    )
                )
            if uploads:
                UploadClient(
                    _client=client,
                    logger=rucio_logger("upload"),
                    tracing=self.send_traces,
                ).upload(uploads)
            if files:
                self._ensure_rule(client, dataset)
        return archived

    def _ensure_rule(self, client: Any, dataset: str) -> None:
        """One rule of this account on the archive RSE for the dataset, reused if present."""
        account = client.account
        for rule in client.list_did_rules(self.scope, dataset):
            if rule["account"] == account and rule["rse_expression"] == self.archive_rse:
                return
        client.add_replication_rule(
            [{"scope": self.scope, "name": dataset}],
            1,
            self.archive_rse,
            lifetime=self.rule_lifetime,
        )

    def parse_dids(self, dids: Sequence[str]) -> list[Did]:
        """DIDs as typed (`scope:name`, or a name in this store's scope); wildcards refused."""
        return [Did.parse(text, self.scope) for text in dids]

    def stage_in(
        self,
        dids: Sequence[str],
        rse: str,
        *,
        lifetime: int | Literal["default"] | None = "default",
        timeout: float = 3600.0,
        poll_interval: float = 2.0,
        download_to: Path | None = None,
        progress: Callable[[StageProgress], None] | None = None,
        outage_limit: float | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> StagedInputs:
        """Make every file of `dids` available at `rse`; PFNs there, or copies in `download_to`.

        A rule of this account on `rse` is reused rather than duplicated; new rules get
        `lifetime` seconds (the store's rule lifetime by default, None for no expiry).
        Unknown DIDs, STUCK or missing replicas and the timeout raise StagingError naming
        the files; the rules stay, so staging again carries on where this left off. While
        Rucio cannot be reached the wait goes on (`warn` told) up to `outage_limit` seconds.
        """
        parsed = self.parse_dids(dids)
        if not parsed:
            raise FatalError("nothing to stage: no data identifiers given")
        seconds = self.rule_lifetime if lifetime == "default" else lifetime
        with self._client(f"stage data to {rse}") as client:
            resolve(client, parsed)
            rules = [ensure_rule(client, did, rse, seconds) for did in dict.fromkeys(parsed)]
            wait_for_rules(
                client,
                rules,
                rse,
                timeout=timeout,
                poll_interval=poll_interval,
                progress=progress,
                outage_limit=outage_limit,
                warn=warn,
            )
            files = replicas(client, parsed, rse)
            if download_to is not None:
                files = download(client, parsed, files, rse, download_to)
        return StagedInputs(rse=rse, rules=rules, files=files)

    def locations(self, dids: Sequence[str]) -> list[str]:
        """RSEs holding a whole copy of `dids` (or, if none does, those holding most)."""
        parsed = self.parse_dids(dids)
        with self._client("find where data is") as client:
            resolve(client, parsed)
            return complete_copies(client, parsed)

    def fetch(self, dids: Sequence[str], dest: Path) -> StagedInputs:
        """Download every file of `dids` from wherever Rucio has it, without adding a rule."""
        parsed = self.parse_dids(dids)
        if not parsed:
            raise FatalError("nothing to fetch: no data identifiers given")
        with self._client("download data") as client:
            resolve(client, parsed)
            files = download(client, parsed, replicas(client, parsed, None), None, dest)
        return StagedInputs(rse="", rules=[], files=files)

    def check_rse(self, rse: str) -> None:
        """FatalError unless Rucio knows an RSE called `rse`."""
        with self._client(f"look up RSE {rse}") as client:
            client.get_rse(rse)
