"""The `kubernetes` work pool: prefect-kubernetes' worker, its template set from a saved facility.

The pool runs each flow run as a Job of the runtime image on the cluster of the first saved
Kubernetes facility: its namespace, its cluster (a KubernetesClusterConfig block made from
the facility's kubeconfig), and on a single-node cluster the host's network and home.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import get_client
from prefect_kubernetes.credentials import KubernetesClusterConfig
from prefect_kubernetes.worker import KubernetesWorker

from blocks.facility import FacilityBlock
from blocks.kubernetes import KubernetesFacility
from core.settings import home

HOST_VARIABLES: dict[str, dict[str, Any]] = {
    "host_network": {
        "title": "Host network",
        "description": "Pods use the node's network (single-node clusters: the Prefect API "
        "on the host's loopback).",
        "type": "boolean",
        "default": False,
    },
    "volumes": {
        "title": "Volumes",
        "description": "Pod volumes, as in a pod spec (e.g. the host's esap-prefect home).",
        "type": "array",
        "items": {"type": "object"},
        "default": [],
    },
    "volume_mounts": {
        "title": "Volume mounts",
        "description": "Where the flow's container mounts them, as in a container spec.",
        "type": "array",
        "items": {"type": "object"},
        "default": [],
    },
}


def template() -> dict[str, Any]:
    """prefect-kubernetes' base job template, with host network and volumes as variables."""
    base: dict[str, Any] = copy.deepcopy(KubernetesWorker.get_default_base_job_template())
    base["variables"]["properties"].update(copy.deepcopy(HOST_VARIABLES))
    pod = base["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    pod["hostNetwork"] = "{{ host_network }}"
    pod["volumes"] = "{{ volumes }}"
    pod["containers"][0]["volumeMounts"] = "{{ volume_mounts }}"
    return base


def cluster_facility(facilities: list[FacilityBlock]) -> KubernetesFacility:
    """The saved Kubernetes facility whose cluster the pool runs on (first by name)."""
    found = sorted(
        (f for f in facilities if isinstance(f, KubernetesFacility)), key=lambda f: f.facility_name
    )
    return found[0]


def kubeconfig(facility: KubernetesFacility) -> dict[str, Any] | None:
    """The facility's kubeconfig as a dict (one written for a bare API URL); None in-cluster."""
    if facility.in_cluster:
        return None
    if facility.api_url:
        name = facility.facility_name
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": facility.api_url}}],
            "users": [{"name": name, "user": {}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
            "current-context": name,
        }
    if facility.kubeconfig_content is not None:
        loaded: dict[str, Any] = yaml.safe_load(facility.kubeconfig_content.get_secret_value())
        return loaded
    default = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]
    path = (facility.kubeconfig or Path(default)).expanduser()
    read: dict[str, Any] = yaml.safe_load(path.read_text())
    return read


def ensure_cluster_config(facility: KubernetesFacility) -> dict[str, Any] | None:
    """Save the facility's cluster as a KubernetesClusterConfig block; its reference.

    The block is named `esap-<facility>`; None when the worker is in the cluster.
    """
    config = kubeconfig(facility)
    if config is None:
        return None
    context = facility.context or str(config.get("current-context") or "")
    block = KubernetesClusterConfig(config=config, context_name=context)
    block_id = block.save(f"esap-{facility.facility_name}", overwrite=True)
    return {"$ref": {"block_document_id": str(block_id)}}


def defaults(facility: KubernetesFacility, tag: str, shared: Path) -> dict[str, Any]:
    """The pool's variable defaults that follow the facility and the runtime image."""
    chosen: dict[str, Any] = {
        "image": tag,
        "namespace": facility.namespace,
        "image_pull_policy": facility.image_pull_policy,
        "cluster_config": ensure_cluster_config(facility),
        "finished_job_ttl": facility.ttl_after_finished,
    }
    if facility.service_account:
        chosen["service_account_name"] = facility.service_account
    if facility.host_path is not None:  # one node, this host: its network and home
        chosen["host_network"] = True
        chosen["volumes"] = [
            {"name": "esap-home", "hostPath": {"path": str(shared), "type": "Directory"}}
        ]
        chosen["volume_mounts"] = [{"name": "esap-home", "mountPath": str(shared)}]
        chosen["env"] = {"ESAP_PREFECT_HOME": str(shared)}
    return chosen


def description(facility: KubernetesFacility, tag: str) -> str:
    """What the pool runs, and what it lacks, for the UI."""
    what = (
        "prefect-kubernetes' worker: each flow run is a Job of the esap-prefect runtime image; "
        "cancelling a run deletes its Job."
    )
    if not tag:
        return (
            f"{what} Not configured: no runtime image is built; run `esap-prefect images build "
            "--docker` (and push it where the cluster pulls from), then `esap-prefect up` again."
        )
    return (
        f"{what} Cluster: facility {facility.facility_name}, namespace {facility.namespace}. "
        f"Image: {tag}. Start `esap-prefect worker --pool kubernetes`."
    )


def write_kubeconfig(pool: str, block_document_id: str) -> Path:
    """The pool's KubernetesClusterConfig as a kubeconfig file (owner only) in the home."""
    with get_client(sync_client=True) as client:
        document = client.read_block_document(UUID(block_document_id), include_secrets=True)
    config = KubernetesClusterConfig.model_validate(document.data)
    folder = home() / "kubernetes"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{pool}.kubeconfig"
    chosen = {**config.config, "current-context": config.context_name}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(chosen, out)
    return path
