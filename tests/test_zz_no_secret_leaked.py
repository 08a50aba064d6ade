"""The last test of the suite: no secret it handed out shows up in anything it produced.

Secrets: DiracX tokens, the Rucio and PostgreSQL passwords, OIDC tokens and a line of the
issuer's key, gateway tokens, every job's call-back token, every secret field of every block.
Searched: every log file and job stream our processes wrote, the archives, and on every
Prefect API still up: all logs, artifacts, flow-run parameters and state messages; and every
gateway answer the tests received (tests/leaks.py).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from core.callbacks import TOKEN_VARIABLE
from tests import leaks

THIRD_PARTY = ("diracx", "rucio", "docker", "esap-pg-", "vo", "sif", "apptainer-bin")
"""Temporary folders of the servers the tests run (their own logs are not ours to judge)."""
STREAMS = {"stdout", "stderr", "stdout.log", "stderr.log", "exit_code"}
READ_BYTES = 16 * 2**20
PAGE = 200


def _ours(base: Path) -> Iterator[Path]:
    for top in sorted(base.iterdir()):
        if not top.name.startswith(THIRD_PARTY):
            yield top


def _files(roots: list[Path]) -> Iterator[Path]:
    """Logs, job streams and archived files under the roots (no links followed)."""
    for root in roots:
        for path in root.rglob("*"):
            if path.is_symlink() or not path.is_file():
                continue
            if path.suffix == ".log" or path.name in STREAMS or "archive" in path.parts:
                yield path


def _job_tokens(roots: list[Path]) -> None:
    """The call-back tokens the local facilities' jobs got (their records keep the spec)."""
    for root in roots:
        for spec in root.rglob(".esap/*/spec.json"):
            env = json.loads(spec.read_text()).get("env", {})
            if env.get(TOKEN_VARIABLE):
                leaks.secret(str(env[TOKEN_VARIABLE]))


def _pages(read: Any) -> Iterator[Any]:
    offset = 0
    while page := read(limit=PAGE, offset=offset):
        yield from page
        offset += len(page)


def _walk(value: Any, path: list[str]) -> Iterator[Any]:
    if not path:
        yield value
        return
    head, rest = path[0], path[1:]
    if head == "*" and isinstance(value, dict):
        for item in value.values():
            yield from _walk(item, rest)
    elif isinstance(value, dict) and head in value:
        yield from _walk(value[head], rest)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _block_secrets(client: SyncPrefectClient) -> None:
    """Every secret field's value of every block document on this API."""
    for document in client.read_block_documents(include_secrets=True):
        schema = document.block_schema
        fields = schema.fields.get("secret_fields", []) if schema else []
        if document.block_type and document.block_type.slug == "secret":
            fields = ["value"]
        for field in fields:
            for value in _walk(document.data, str(field).split(".")):
                for text in _strings(value):
                    leaks.secret(text)


def _api_texts(client: SyncPrefectClient) -> Iterator[tuple[str, str]]:
    for log in _pages(client.read_logs):
        yield "log", log.message
    for artifact in _pages(client.read_artifacts):
        yield "artifact", json.dumps(artifact.data) + (artifact.description or "")
    for run in _pages(client.read_flow_runs):
        yield "flow-run parameters", json.dumps(run.parameters, default=str)
        yield "flow-run state", (run.state.message or "") if run.state else ""


def test_no_secret_the_suite_used_is_in_any_log_artifact_parameter_or_answer(
    prefect_api: str, tmp_path_factory: pytest.TempPathFactory, esap_home: Path
) -> None:
    roots = [*_ours(tmp_path_factory.getbasetemp()), esap_home]
    _job_tokens(roots)
    texts: list[tuple[str, str]] = []
    searched: Counter[str] = Counter()
    for api in sorted({prefect_api, *leaks.APIS}):
        try:
            httpx.get(f"{api}/health", timeout=5).raise_for_status()
        except httpx.HTTPError:
            continue  # stopped with its module; its processes' log files are searched
        with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            _block_secrets(client)
            texts += _api_texts(client)
        searched["Prefect API"] += 1
    assert leaks.SECRETS, "the suite handed out no secret to look for"
    for kind, _ in texts:
        searched[kind] += 1

    found: list[str] = []
    for path in _files(roots):
        searched["file"] += 1
        with path.open("rb") as stream:
            data = stream.read(READ_BYTES).decode(errors="replace")
        found += [f"{path}: {s[:6]}..." for s in leaks.SECRETS if s in data]
    for kind, text in texts:
        found += [f"{kind}: {s[:6]}... in {text[:80]!r}" for s in leaks.SECRETS if s in text]
    for i, answer in enumerate(leaks.ANSWERS):
        searched["gateway answer"] += 1
        body = answer.decode(errors="replace")
        found += [f"gateway answer {i}: {s[:6]}..." for s in leaks.SECRETS if s in body]
    print(f"\n{len(leaks.SECRETS)} secrets searched in {dict(searched)}")
    assert searched["Prefect API"] >= 1 and searched["file"] > 0
    assert not found, "\n".join(found[:30])
