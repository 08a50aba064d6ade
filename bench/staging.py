"""Staging benchmark: a 100-file dataset staged to another RSE, this project vs raw rucio-clients.

One real Rucio server; Rucio's own conveyor (mock transfer tool + copy) serves both contenders.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ["ESAP_PREFECT_HOME"] = tempfile.mkdtemp(prefix="esap-bench-staging-")
os.environ.pop("PREFECT_API_URL", None)
from core.settings import configure_prefect_environment

configure_prefect_environment()

from prefect import flow  # noqa: E402
from prefect.testing.utilities import prefect_test_harness  # noqa: E402
from pydantic import SecretStr  # noqa: E402
from rucio.client.baseclient import BaseClient  # noqa: E402

from blocks.rucio import RucioStore  # noqa: E402
from blocks.rucio.session import rucio_client, rucio_logger  # noqa: E402
from tasks.stage import stage_inputs  # noqa: E402
from tests.servers.rucio import RucioServer  # noqa: E402

FILES = int(os.environ.get("BENCH_FILES", "100"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
POLL = 0.5
CALLS: Counter[str] = Counter()


def count_calls() -> None:
    """Count every HTTP request rucio-clients sends (both contenders use the same client)."""
    send = BaseClient._send_request

    def counted(self: Any, url: str, *args: Any, **kwargs: Any) -> Any:
        CALLS["http"] += 1
        return send(self, url, *args, **kwargs)

    BaseClient._send_request = counted


def raw(store: RucioStore, dataset: str, target: str) -> int:
    """The minimal raw calls: add the rule, poll it until OK, list the PFNs at the target."""
    did = {"scope": "esap", "name": dataset}
    with rucio_client(store._config_file(), "bench") as client:
        [rule_id] = client.add_replication_rule([did], 1, target)
        while client.get_replication_rule(rule_id)["state"] != "OK":
            time.sleep(POLL)
        pfns = [r["rses"][target][0] for r in client.list_replicas([did], rse_expression=target)]
    return len(pfns)


def block(store: RucioStore, dataset: str, target: str) -> int:
    """This project's store, called directly."""
    staged = store.stage_in([f"esap:{dataset}"], target, poll_interval=POLL, timeout=600)
    return len(staged.files)


@flow(name="bench-staging")
def in_flow(store: RucioStore, dataset: str, target: str, dest: Path) -> int:
    """This project's stage-inputs task in a flow (artifacts, progress, retries)."""
    staged = stage_inputs(
        store, [f"esap:{dataset}"], target, dest, download=False, poll_interval=POLL
    )
    return len(staged.files)


def raw_download(store: RucioStore, dataset: str, target: str, dest: Path) -> int:
    """Raw DownloadClient for the same dataset, already at the target."""
    from rucio.client.downloadclient import DownloadClient

    with rucio_client(store._config_file(), "bench") as client:
        items = [{"did": f"esap:{dataset}", "rse": target, "base_dir": str(dest)}]
        for replica in client.list_replicas([{"scope": "esap", "name": dataset}]):
            (dest / dataset / replica["name"]).parent.mkdir(parents=True, exist_ok=True)
        downloader = DownloadClient(client=client, logger=rucio_logger("bench"), tracing=False)
        done = downloader.download_dids(items)
    return len(done)


def block_download(store: RucioStore, dataset: str, target: str, dest: Path) -> int:
    """This project's stage-in with download, the rule already in place."""
    staged = store.stage_in([f"esap:{dataset}"], target, download_to=dest, timeout=60)
    return len(staged.files)


def measure(run: Callable[[], int]) -> tuple[float, int, int]:
    CALLS.clear()
    start = time.perf_counter()
    done = run()
    return time.perf_counter() - start, CALLS["http"], done


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-rucio-"))
    server = RucioServer(root / "server")
    server.start()
    results: dict[str, list[tuple[float, int, int]]] = {}
    try:
        server.add_rse("ESAP_ARCHIVE", root / "rse-a")
        server.add_rse("SITE_B", root / "rse-b")
        store = RucioStore(
            rucio_host=server.url,
            account="root",
            username=server.user,
            password=SecretStr(server.password),
            archive_rse="ESAP_ARCHIVE",
            send_traces=False,
        )
        count_calls()
        names = [f"{c}{r}" for r in range(ROUNDS + 1) for c in ("raw", "blk", "flw")]
        for name in names:
            server.seed_dataset(
                name,
                {f"{name}/f{i:03d}": f"{name} {i}\n".encode() for i in range(FILES)},
                "ESAP_ARCHIVE",
            )
        with prefect_test_harness(server_startup_timeout=120), server.conveyor(interval=0.1):
            in_flow(store, f"flw{ROUNDS}", "SITE_B", root / "warm")  # warm-up round
            for r in range(ROUNDS):
                order: list[tuple[str, Callable[[], int]]] = [
                    ("raw rule+wait+PFNs", partial(raw, store, f"raw{r}", "SITE_B")),
                    ("ours (store)", partial(block, store, f"blk{r}", "SITE_B")),
                    ("ours (flow task)", partial(in_flow, store, f"flw{r}", "SITE_B", root)),
                ]
                if r % 2:
                    order.reverse()
                for label, run in order:
                    results.setdefault(label, []).append(measure(run))
                for label, run in (
                    (
                        "raw download",
                        partial(raw_download, store, f"raw{r}", "SITE_B", root / f"rd{r}"),
                    ),
                    (
                        "ours download",
                        partial(block_download, store, f"raw{r}", "SITE_B", root / f"od{r}"),
                    ),
                ):
                    results.setdefault(label, []).append(measure(run))
    finally:
        server.stop()
    print(f"Rucio staging: a {FILES}-file dataset to another RSE, {ROUNDS} rounds, medians")
    print(f"(Rucio's conveyor with the mock transfer tool + copy; poll interval {POLL} s)")
    print(f"{'':24}{'wall s':>8}{'http calls':>12}{'files':>7}{'ratio':>8}")
    for kind, base in (("", "raw rule+wait+PFNs"), ("download", "raw download")):
        reference = statistics.median(t for t, _, _ in results[base])
        for label, runs in results.items():
            if ("download" in label) != bool(kind):
                continue
            wall = statistics.median(t for t, _, _ in runs)
            calls = int(statistics.median(c for _, c, _ in runs))
            print(f"{label:24}{wall:8.2f}{calls:12d}{runs[-1][2]:7d}{wall / reference:7.2f}x")
    print("target: ours within 1.2x of the raw client")


if __name__ == "__main__":
    main()
