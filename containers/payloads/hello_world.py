"""ESAP Hello World payload: echo the job's parameters as JSON with "type": "batch.submit".

Usage: python3 hello_world.py PARAMETERS.json OUTPUT.json (standard library only). In a UWS
job it reports back as ESAP's batch jobs do: EXECUTING, then COMPLETE or ERROR (its output
is archived by the flow, so it adds no result of its own).
"""

import json
import os
import sys
import urllib.request
import zlib
from typing import Any
from urllib.parse import urlparse


class _Client:
    """The calls of django-uws's `uws.client.Client`, where that package is not installed."""

    def __init__(self, host: str) -> None:
        self._host = host.rstrip("/")

    def _call(self, method: str, path: str, token: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self._host}/jobs/{path}",
            data=data,
            method=method,
            headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)

    def execute_job(self, job_id: str, job_token: str) -> Any:
        return self._call("POST", f"{job_id}/phase/", job_token, {"PHASE": "EXECUTING"})

    def complete_job(self, job_id: str, job_token: str) -> Any:
        return self._call("POST", f"{job_id}/phase/", job_token, {"PHASE": "COMPLETE"})

    def fail_job(self, job_id: str, errorSummary: str, job_token: str) -> Any:
        self._call("PATCH", f"{job_id}/", job_token, {"errorSummary": errorSummary})
        return self._call("POST", f"{job_id}/phase/", job_token, {"PHASE": "ERROR"})


class CallBacks:
    """Reports to the UWS job this payload serves (ESAP_UWS_*); a failed report is only told.

    Uses django-uws's own worker client when it is installed.
    """

    def __init__(self) -> None:
        self.url = os.environ.get("ESAP_UWS_URL", "")
        self.job_id = os.environ.get("ESAP_UWS_JOB_ID", "")
        self._token = os.environ.get("ESAP_UWS_JOB_TOKEN", "")
        self.client: Any = None
        if self.url and self.job_id and self._token:
            try:
                from uws.client import Client  # django-uws's worker client
            except ImportError:
                self.client = _Client(self.url)
                print(f"UWS job {self.job_id}: calling back with urllib", file=sys.stderr)
            else:
                self.client = Client(self.url)
                print(f"UWS job {self.job_id}: calling back with django-uws", file=sys.stderr)

    def _report(self, what: str, *args: Any) -> None:
        if self.client is None:
            return
        try:
            getattr(self.client, what)(self.job_id, *args, self._token)
        except Exception as exc:  # the job's work matters more than its report
            print(f"call-back {what} failed: {exc}"[:500], file=sys.stderr)

    def executing(self) -> None:
        self._report("execute_job")

    def complete(self) -> None:
        self._report("complete_job")

    def fail(self, summary: str) -> None:
        self._report("fail_job", summary[:1000])


def _read(entry: dict[str, Any]) -> bytes | None:
    """The input's bytes: its copy in the job directory, or its file:// PFN; None if remote."""
    if entry.get("path"):
        with open(entry["path"], "rb") as handle:
            return handle.read()
    pfn = urlparse(entry.get("pfn") or "")
    if pfn.scheme == "file" and os.path.isfile(pfn.path):
        with open(pfn.path, "rb") as handle:
            return handle.read()
    return None


def _inputs() -> list[dict[str, Any]]:
    """What the job received (inputs.json, when the run had inputs), each file read back."""
    if not os.path.exists("inputs.json"):
        return []
    with open("inputs.json") as handle:
        manifest = json.load(handle)
    seen = []
    for entry in manifest["rucio"] + manifest["vo"]:
        data = _read(entry)
        seen.append(
            {
                "name": entry.get("did") or entry["path"],
                "bytes": None if data is None else len(data),
                "adler32": None if data is None else f"{zlib.adler32(data):08x}",
            }
        )
    return seen


def echo(source: str, target: str) -> bytes:
    """Read the parameter file ESAP's form wrote; write it back with the job type."""
    with open(source) as handle:
        parameters = json.load(handle)
    echoed = {**parameters, "type": "batch.submit"}
    inputs = _inputs()
    if inputs:
        echoed["inputs"] = inputs
    text = json.dumps(echoed, indent=2, sort_keys=True)
    with open(target, "w") as handle:
        handle.write(text)
    print(json.dumps(echoed, sort_keys=True))
    return text.encode()


def main() -> None:
    """Echo the parameters, reporting to the UWS job if there is one."""
    callbacks = CallBacks()
    callbacks.executing()
    try:
        echo(sys.argv[1], sys.argv[2])
    except Exception as exc:
        callbacks.fail(f"{type(exc).__name__}: {exc}")
        raise
    callbacks.complete()


if __name__ == "__main__":
    main()
