"""The Rucio store: archive outputs into the ESCAPE data lake, one dataset per run.

Uses rucio-clients (Client, UploadClient); credentials stay in a private client config file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr

from blocks.archive import ArchivedFile, StoreBlock
from blocks.checksums import digest
from blocks.errors import CredentialsError, FatalError, TransientError
from blocks.jobs import OutputFile, relative_path
from blocks.secret_files import write_secret_file
from esap_prefect.settings import home
from planner.units import Duration

_CONFIG_LOCK = threading.RLock()


class _UploadLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that is also callable as `logger(level, msg)`.

    rucio-clients 41.5's UploadClient calls `logger.log(...)`, and with tracing off also
    `logger(...)`; this serves both.
    """

    def __call__(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        self.log(level, msg, *args, **kwargs)


class RucioStore(StoreBlock):
    """Archives run outputs to Rucio, one dataset per run.

    Files are uploaded with checksums and attached to the run's dataset, which gets a
    replication rule with the configured lifetime on the archive RSE.

    With no host given, the standard `RUCIO_CONFIG` file is used as it is.

    Example:
        ```python
        from blocks.rucio_store import RucioStore
        RucioStore(rucio_host="https://rucio.example.org", account="esap",
                   username="esap", password="...", archive_rse="CTAO_ARCHIVE").save("lake")
        ```
    """

    _block_type_name = "Rucio Store"
    _description = "Archives ESAP run outputs to a Rucio data lake, with checksums."

    kind: str = "rucio"
    rucio_host: str | None = Field(
        default=None, description="Rucio server; default from RUCIO_CONFIG."
    )
    auth_host: str | None = Field(default=None, description="Auth server; default rucio_host.")
    account: str | None = None
    auth_type: Literal["userpass", "x509_proxy"] = "userpass"
    username: str | None = None
    password: SecretStr | None = None
    proxy_path: Path | None = Field(default=None, description="X.509 proxy for x509_proxy.")
    ca_cert: Path | None = None
    scope: str = Field(default="esap", pattern=r"^[A-Za-z0-9._-]{1,25}$")
    archive_rse: str = Field(min_length=1, description="RSE the outputs are uploaded to.")
    send_traces: bool = Field(
        default=True,
        description="Send upload traces (Rucio's popularity data); off for servers without "
        "a trace broker, which answer them slowly.",
    )
    rule_lifetime: Duration | None = Field(
        default="30d",
        validate_default=True,
        description="Lifetime of the archive rule; empty for no expiry.",
    )

    def _config_file(self) -> Path | None:
        if not self.rucio_host:
            return None
        lines = [
            "[common]",
            "[client]",
            f"rucio_host = {self.rucio_host}",
            f"auth_host = {self.auth_host or self.rucio_host}",
            f"auth_type = {self.auth_type}",
            f"account = {self.account or ''}",
            "request_retries = 2",
        ]
        if self.username:
            lines.append(f"username = {self.username}")
        if self.password:
            lines.append(f"password = {self.password.get_secret_value()}")
        if self.proxy_path:
            lines.append(f"client_x509_proxy = {self.proxy_path}")
        if self.ca_cert:
            lines.append(f"ca_cert = {self.ca_cert}")
        text = "\n".join(lines) + "\n"
        name = hashlib.sha256(text.encode()).hexdigest()[:16]
        path = home() / "secrets" / f"rucio-{name}.cfg"
        lines.append(f"auth_token_file_path = {path.with_suffix('.token')}")
        text = "\n".join(lines) + "\n"
        if not path.exists() or path.read_text() != text:
            write_secret_file(path, text)
        return path

    @contextlib.contextmanager
    def _client(self, what: str) -> Iterator[Any]:
        """A rucio Client under this store's configuration; errors translated."""
        from rucio.client import Client
        from rucio.common import exception as rucio_errors
        from rucio.common.config import clean_cached_config

        path = self._config_file()
        with _CONFIG_LOCK:
            before = os.environ.get("RUCIO_CONFIG")
            if path is not None:
                os.environ["RUCIO_CONFIG"] = str(path)
            clean_cached_config()
            try:
                yield Client()
            except (rucio_errors.CannotAuthenticate, rucio_errors.AccessDenied) as exc:
                raise CredentialsError(
                    f"Rucio refused the credentials while trying to {what}: {exc}"
                ) from exc
            except (rucio_errors.ServiceUnavailable, rucio_errors.RucioException) as exc:
                if (
                    isinstance(exc, rucio_errors.ServiceUnavailable)
                    or "connect" in str(exc).lower()
                ):
                    raise TransientError(
                        f"Rucio could not be reached while trying to {what}"
                    ) from exc
                raise
            finally:
                if before is None:
                    os.environ.pop("RUCIO_CONFIG", None)
                else:
                    os.environ["RUCIO_CONFIG"] = before
                clean_cached_config()

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
                    logger=_UploadLogger(logging.getLogger("rucio.upload")),
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
