"""A stand-in for a Kubernetes API server (v1.33): no kube-apiserver, k3s or kind runs here.

It speaks the REST API for what the Kubernetes facility uses: namespaces, batch/v1 Jobs,
core/v1 Pods with `/log`, Events and Secrets; lists with label selectors and
`resourceVersion`, `watch=true` streams, and `Status` bodies for 404, 409 and 422 as the API
server writes them. Every object it accepts is validated against the published schema of
that version (kubernetes-validate) and defaulted as the API server does. `kubelet.py` plays
the nodes and the job controller. Not checked: scheduling, RBAC, admission, quotas.
"""

from __future__ import annotations

import base64
import builtins
import copy
import json
import re
import secrets
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from blocks.kubernetes_manifest import schema_validator

VERSION = "1.33.0"
NAMESPACES = ("default", "kube-system", "esap")
VERSION_INFO = {  # what GET /version answers, every field the clients' models require
    "major": "1",
    "minor": "33",
    "gitVersion": f"v{VERSION}+esap-standin",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2025-04-23T00:00:00Z",
    "goVersion": "go1.24.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
KINDS = {  # resource -> (apiVersion, kind, namespaced)
    "namespaces": ("v1", "Namespace", False),
    "jobs": ("batch/v1", "Job", True),
    "pods": ("v1", "Pod", True),
    "secrets": ("v1", "Secret", True),
    "events": ("v1", "Event", True),
}
CREATABLE = frozenset({"jobs", "secrets", "events"})
HISTORY = 20_000  # watch events kept; an older resourceVersion gets 410 Expired
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def _resource(name: str, kind: str, verbs: list[str], namespaced: bool = True) -> dict[str, Any]:
    singular = "" if "/" in name else kind.lower()
    return {"name": name, "singularName": singular, "namespaced": namespaced, "kind": kind,
            "verbs": verbs}  # fmt: skip


ALL_VERBS = ["create", "delete", "get", "list", "watch"]
BATCH = {"name": "batch", "versions": [{"groupVersion": "batch/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "batch/v1", "version": "v1"}}  # fmt: skip
DISCOVERY: dict[str, dict[str, Any]] = {  # what clients read to find the resources
    "/api": {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    },
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            _resource("namespaces", "Namespace", ["get", "list", "watch"], namespaced=False),
            _resource("pods", "Pod", ["delete", "get", "list", "watch"]),
            _resource("pods/log", "Pod", ["get"]),
            _resource("secrets", "Secret", ALL_VERBS),
            _resource("events", "Event", ALL_VERBS),
        ],
    },
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [BATCH]},
    "/apis/batch": {"kind": "APIGroup", "apiVersion": "v1", **BATCH},
    "/apis/batch/v1": {
        "kind": "APIResourceList",
        "groupVersion": "batch/v1",
        "resources": [
            _resource("jobs", "Job", ALL_VERBS),
            _resource("jobs/status", "Job", ["get"]),
        ],
    },
}


def now() -> str:
    """A timestamp as the API server writes them (RFC 3339, seconds, Z)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An answer other than success: its code, reason and message become a Status body."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def _group(resource: str) -> str:
    return "batch" if resource == "jobs" else ""


def _group_kind(resource: str) -> str:
    return f"{resource}.batch" if resource == "jobs" else resource


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f'{_group_kind(resource)} "{name}" not found',
        {"name": name, "group": _group(resource), "kind": resource},
    )


def invalid(resource: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    kind = KINDS[resource][1]
    group = f".{_group(resource)}" if _group(resource) else ""
    text = "; ".join(f"{field}: {message}" for field, message in causes)
    return ApiError(
        422,
        "Invalid",
        f'{kind}{group} "{name}" is invalid: {text}',
        {
            "name": name,
            "group": _group(resource),
            "kind": kind,
            "causes": [
                {"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes
            ],
        },
    )


def matches(labels: dict[str, str], selector: str) -> bool:
    """Whether labels satisfy a label selector (=, ==, !=, in, notin, exists, !exists)."""
    for raw in re.split(r",(?![^()]*\))", selector.strip()):
        term = raw.strip()
        if not term:
            continue
        if found := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            key, op, values = found[1], found[2], {v.strip() for v in found[3].split(",")}
            if (labels.get(key) in values) != (op == "in"):
                return False
        elif "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (part.strip() for part in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_matches(obj: dict[str, Any], selector: str) -> bool:
    """The field selectors clients use here: metadata.name and metadata.namespace (=, !=)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        key, value = (p.strip() for p in term.replace("!=", "=").replace("==", "=").split("=", 1))
        actual = obj["metadata"].get(key.removeprefix("metadata."))
        if (actual == value) == negate:
            return False
    return True


class Cluster:
    """The API server's storage: objects, a resourceVersion counter, the watch history."""

    def __init__(self, claims: dict[str, str] | None = None) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, str, str, dict[str, Any]]] = []
        self.version = 1
        self.changed = threading.Condition()
        self.calls: Counter[str] = Counter()
        self.claims = dict(claims or {})  # PersistentVolumeClaim name -> host directory
        for namespace in NAMESPACES:
            self._store("namespaces", "", self._meta({"metadata": {"name": namespace}}, ""))

    def _meta(self, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        if namespace:
            meta["namespace"] = namespace
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now())
        return obj

    def _store(self, resource: str, namespace: str, obj: dict[str, Any], event: str = "") -> None:
        with self.changed:
            self.version += 1
            api_version, kind, _ = KINDS[resource]
            obj["apiVersion"], obj["kind"] = api_version, kind
            obj["metadata"]["resourceVersion"] = str(self.version)
            key = (resource, namespace, obj["metadata"]["name"])
            event = event or ("MODIFIED" if key in self.objects else "ADDED")
            if event == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
            self.history.append((self.version, resource, namespace, event, copy.deepcopy(obj)))
            del self.history[:-HISTORY]
            self.changed.notify_all()

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        with self.changed:
            obj = self.objects.get((resource, namespace, name))
            if obj is None:
                raise not_found(resource, name)
            return copy.deepcopy(obj)

    def list(
        self, resource: str, namespace: str, labels: str = "", fields: str = ""
    ) -> tuple[list[dict[str, Any]], int]:
        with self.changed:
            items = [
                copy.deepcopy(obj)
                for (r, ns, _), obj in self.objects.items()
                if r == resource
                and (not namespace or ns == namespace)
                and matches(obj["metadata"].get("labels") or {}, labels)
                and field_matches(obj, fields)
            ]
            return items, self.version

    def create(
        self,
        resource: str,
        namespace: str,
        obj: dict[str, Any],
        field_validation: str = "Warn",
        warnings: builtins.list[str] | None = None,
    ) -> dict[str, Any]:
        """Validate, default and store a client's object (jobs, secrets, events).

        As the API server does: schema errors are 422; unknown fields are dropped with a
        warning (the default `fieldValidation=Warn`) or refused (`Strict`).
        """
        warnings = [] if warnings is None else warnings
        if ("namespaces", "", namespace) not in self.objects:
            raise ApiError(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                {"name": namespace, "kind": "namespaces"},
            )
        meta = obj.get("metadata") or {}
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = str(meta.get("name") or "")
        obj.setdefault("apiVersion", KINDS[resource][0])
        obj.setdefault("kind", KINDS[resource][1])
        causes, unknown = schema_check(obj)
        if causes:
            raise invalid(resource, name, causes)
        if unknown and field_validation == "Strict":
            raise invalid(resource, name, [(f, "unknown field") for f in unknown])
        warnings.extend(f'unknown field "{f}"' for f in unknown)  # and dropped, as the server does
        causes = check_name(name, 63 if resource == "jobs" else 253)
        if meta.get("namespace") not in (None, namespace):
            causes.append(("metadata.namespace", "does not match the namespace of the request"))
        defaults = {"jobs": default_job, "secrets": default_secret}.get(resource, no_defaults)
        causes += defaults(obj)
        if causes:
            raise invalid(resource, name, causes)
        with self.changed:
            if (resource, namespace, name) in self.objects:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{_group_kind(resource)} "{name}" already exists',
                    {
                        "name": name,
                        "group": _group(resource),
                        "kind": resource,
                    },
                )
            obj.pop("status", None)
            obj["status"] = {}
            self._meta(obj, namespace)
            if resource == "jobs":
                obj["metadata"]["generation"] = 1
                uid = obj["metadata"]["uid"]
                own = {
                    "batch.kubernetes.io/controller-uid": uid,
                    "batch.kubernetes.io/job-name": name,
                    "controller-uid": uid,
                    "job-name": name,
                }
                template_meta = obj["spec"]["template"].setdefault("metadata", {})
                template_meta["labels"] = {**(template_meta.get("labels") or {}), **own}
                obj["spec"]["selector"] = {
                    "matchLabels": {"batch.kubernetes.io/controller-uid": uid}
                }
                obj["metadata"].setdefault("labels", dict(template_meta["labels"]))
            self._store(resource, namespace, obj)
            return copy.deepcopy(obj)

    def put(self, resource: str, namespace: str, obj: dict[str, Any]) -> None:
        """Store an object the cluster's own controllers made or changed (pods, status, events)."""
        self._store(resource, namespace, self._meta(obj, namespace))

    def update(
        self, resource: str, namespace: str, name: str, change: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any] | None:
        """Apply `change` to a stored object (None if it is gone)."""
        with self.changed:
            obj = self.objects.get((resource, namespace, name))
            if obj is None:
                return None
            obj = copy.deepcopy(obj)
            change(obj)
            self._store(resource, namespace, obj)
            return obj

    def delete(
        self, resource: str, namespace: str, name: str, propagation: str | None
    ) -> dict[str, Any]:
        """Delete an object; a Job's pods go too unless the policy orphans them (its default)."""
        with self.changed:
            obj = self.get(resource, namespace, name)
            obj["metadata"]["deletionTimestamp"] = now()
            self._store(resource, namespace, obj, "DELETED")
            # batch/v1 Jobs default to orphaning their pods, as the real API server does;
            # the garbage collector then removes what the Job owned (pods, Secrets)
            if resource == "jobs" and propagation in ("Background", "Foreground"):
                uid = obj["metadata"]["uid"]
                for owned in ("pods", "secrets"):
                    for item in self.list(owned, namespace)[0]:
                        owners = item["metadata"].get("ownerReferences") or []
                        if any(o.get("uid") == uid for o in owners):
                            self.delete(owned, namespace, item["metadata"]["name"], None)
            return obj

    def event(
        self, namespace: str, involved: dict[str, Any], kind: str, reason: str, text: str
    ) -> None:
        """Record an Event about an object, as the controllers and kubelet do."""
        name = f"{involved['metadata']['name']}.{secrets.token_hex(8)}"
        self.put(
            "events",
            namespace,
            {
                "metadata": {"name": name},
                "involvedObject": {
                    "apiVersion": involved["apiVersion"],
                    "kind": involved["kind"],
                    "name": involved["metadata"]["name"],
                    "namespace": namespace,
                    "uid": involved["metadata"]["uid"],
                },
                "reason": reason,
                "message": text,
                "type": kind,
                "source": {"component": "standin-kubelet"},
                "firstTimestamp": now(),
                "lastTimestamp": now(),
                "count": 1,
            },
        )

    def watch(
        self, resource: str, namespace: str, labels: str, since: int | None, seconds: float
    ) -> Iterator[dict[str, Any]]:
        """Watch events after resourceVersion `since` (all current objects first if None)."""
        if since is None:
            items, since = self.list(resource, namespace, labels)
            for item in items:
                yield {"type": "ADDED", "object": item}
        deadline = threading.Event()
        timer = threading.Timer(seconds, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                with self.changed:
                    oldest = self.history[0][0] if self.history else self.version
                    if since < oldest - 1:
                        yield {
                            "type": "ERROR",
                            "object": ApiError(
                                410,
                                "Expired",
                                f"too old resource version: {since} ({oldest - 1})",
                                {},
                            ).status(),
                        }
                        return
                    fresh = [h for h in self.history if h[0] > since]
                    if not fresh:
                        self.changed.wait(0.5)
                        continue
                for version, r, ns, event, obj in fresh:
                    since = version
                    wanted = r == resource and (not namespace or ns == namespace)
                    if wanted and matches(obj["metadata"].get("labels") or {}, labels):
                        yield {"type": event, "object": obj}
        finally:
            timer.cancel()


def schema_check(obj: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str]]:
    """Schema errors of an object, and its unknown fields (removed from it), for VERSION."""
    loose = schema_validator(VERSION, obj["kind"], obj["apiVersion"], strict=False)
    causes = [
        (".".join(str(p) for p in e.absolute_path) or "<root>", e.message[:300])
        for e in loose.iter_errors(obj)
    ]
    if causes:
        return causes, []
    unknown = []
    strict = schema_validator(VERSION, obj["kind"], obj["apiVersion"], strict=True)
    for error in list(strict.iter_errors(obj)):
        if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
            continue
        known = set(error.schema.get("properties", {}))
        for key in [k for k in error.instance if k not in known]:
            unknown.append(".".join([*(str(p) for p in error.absolute_path), key]))
            del error.instance[key]
    return [], unknown


def no_defaults(obj: dict[str, Any]) -> list[tuple[str, str]]:
    return []


def check_name(name: str, longest: int) -> list[tuple[str, str]]:
    if not name:
        return [("metadata.name", "Required value: name or generateName is required")]
    if len(name) > longest:
        return [
            ("metadata.name", f"Invalid value: {name!r}: must be no more than {longest} characters")
        ]
    if not DNS_SUBDOMAIN.match(name):
        return [
            (
                "metadata.name",
                f"Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower "
                "case alphanumeric characters, '-' or '.'",
            )
        ]
    return []


def _labels(meta: dict[str, Any], where: str) -> list[tuple[str, str]]:
    causes = []
    for key, value in (meta.get("labels") or {}).items():
        if len(str(value)) > 63 or not LABEL_VALUE.match(str(value)):
            causes.append((f"{where}.labels", f"Invalid value: {value!r}: a valid label value"))
        if len(key.rsplit("/", 1)[-1]) > 63:
            causes.append((f"{where}.labels", f"Invalid value: {key!r}: name part too long"))
    return causes


def default_job(job: dict[str, Any]) -> list[tuple[str, str]]:
    """Fill a Job's defaults as the API server does; the validation errors the schema misses."""
    causes = _labels(job["metadata"], "metadata")
    spec = job.setdefault("spec", {})
    for field, value in (
        ("parallelism", 1),
        ("completions", 1),
        ("backoffLimit", 6),
        ("completionMode", "NonIndexed"),
        ("suspend", False),
        ("podReplacementPolicy", "TerminatingOrFailed"),
        ("manualSelector", None),
    ):
        if value is not None:
            spec.setdefault(field, value)
    if spec.get("activeDeadlineSeconds") is not None and spec["activeDeadlineSeconds"] <= 0:
        causes.append(("spec.activeDeadlineSeconds", "must be greater than 0"))
    pod = spec.get("template", {}).get("spec", {})
    causes += _labels(spec.get("template", {}).get("metadata", {}), "spec.template.metadata")
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        causes.append(
            (
                "spec.template.spec.restartPolicy",
                'Required value: valid values: "OnFailure", "Never"',
            )
        )
    pod_defaults: tuple[tuple[str, Any], ...] = (
        ("dnsPolicy", "ClusterFirst"),
        ("schedulerName", "default-scheduler"),
        ("securityContext", {}),
        ("terminationGracePeriodSeconds", 30),
        ("serviceAccountName", "default"),
    )
    for field, value in pod_defaults:
        pod.setdefault(field, value)
    volumes = {v.get("name") for v in pod.get("volumes") or []}
    for i, container in enumerate(pod.get("containers") or []):
        where = f"spec.template.spec.containers[{i}]"
        if not DNS_LABEL.match(container.get("name", "")):
            causes.append((f"{where}.name", f"Invalid value: {container.get('name')!r}"))
        if not container.get("image"):
            causes.append((f"{where}.image", "Required value"))
        tag = str(container.get("image", "")).rsplit("/", 1)[-1]
        pull = "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent"
        container.setdefault("imagePullPolicy", pull)
        container.setdefault("terminationMessagePath", "/dev/termination-log")
        container.setdefault("terminationMessagePolicy", "File")
        container.setdefault("resources", {})
        for j, env in enumerate(container.get("env") or []):
            if not ENV_NAME.match(env.get("name", "")):
                causes.append((f"{where}.env[{j}].name", f"Invalid value: {env.get('name')!r}"))
        for j, mount in enumerate(container.get("volumeMounts") or []):
            if mount.get("name") not in volumes:
                causes.append((f"{where}.volumeMounts[{j}].name", "Not found"))
        limits = container["resources"].get("limits") or {}
        requests = container["resources"].get("requests") or {}
        for key, value in requests.items():
            if key in limits and quantity(value) > quantity(limits[key]):
                causes.append(
                    (
                        f"{where}.resources.requests",
                        f"Invalid value: {value!r}: must be <= {key} limit",
                    )
                )
    if not pod.get("containers"):
        causes.append(("spec.template.spec.containers", "Required value"))
    return causes


def default_secret(secret: dict[str, Any]) -> list[tuple[str, str]]:
    """stringData folded into data (base64), type Opaque by default."""
    data = dict(secret.get("data") or {})
    for key, value in (secret.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    causes = []
    for key, value in data.items():
        try:
            base64.b64decode(value, validate=True)
        except ValueError:
            causes.append((f"data[{key}]", "Invalid value: not base64"))
    secret["data"] = data
    secret.setdefault("type", "Opaque")
    return causes


QUANTITY = re.compile(r"^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti|e\d+)?$")
SUFFIX = {
    None: 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
}


def quantity(text: str | int | float) -> float:
    """A Kubernetes quantity ("500m", "2", "1Gi") as a number."""
    found = QUANTITY.match(str(text))
    if found is None:
        raise ValueError(f"not a quantity: {text!r}")
    suffix = found[2]
    if suffix and suffix.startswith("e"):
        return float(found[1]) * 10.0 ** int(suffix[1:])
    return float(found[1]) * float(SUFFIX[suffix])


ROUTE = re.compile(
    r"^/(?:api/v1|apis/batch/v1)(?:/namespaces/(?P<ns>[^/]+))?"
    r"(?:/(?P<resource>jobs|pods|secrets|events)(?:/(?P<name>[^/]+)(?:/(?P<sub>log|status))?)?)?$"
)


class ApiServer(ThreadingHTTPServer):
    """The HTTP side: routes, Status bodies, watch streams; `logs` is set by the kubelet."""

    daemon_threads = True

    def __init__(self, cluster: Cluster, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.cluster = cluster
        self.logs: Callable[[str, str, dict[str, list[str]]], bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="kube-apiserver", daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _send(
        self,
        code: int,
        body: dict[str, Any] | bytes,
        kind: str = "application/json",
        warnings: list[str] | None = None,
    ) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", kind)
        for warning in warnings or []:
            self.send_header("Warning", f"299 - {json.dumps(warning)}")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 3 * 1024 * 1024:  # the API server's request size limit
            raise ApiError(413, "RequestEntityTooLarge", "request entity too large", {})
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as exc:
            raise ApiError(400, "BadRequest", f"the body is not JSON: {exc}", {}) from None
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body is not an object", {})
        return body

    def _answer(self, verb: str) -> None:
        cluster = self.server.cluster
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        one = {k: v[-1] for k, v in query.items()}
        try:
            if split.path.rstrip("/") == "/version":
                self._send(200, VERSION_INFO)
                return
            if split.path.rstrip("/") in DISCOVERY:
                self._send(200, DISCOVERY[split.path.rstrip("/")])
                return
            route = ROUTE.match(split.path)
            if route is None:
                raise ApiError(
                    404, "NotFound", "the server could not find the requested resource", {}
                )
            ns, resource, name, sub = (
                route["ns"] or "",
                route["resource"],
                route["name"],
                route["sub"],
            )
            if resource is None:
                resource, name, ns = "namespaces", ns or None, ""
            if split.path.startswith("/apis/batch/v1") != (resource == "jobs"):
                raise ApiError(
                    404, "NotFound", "the server could not find the requested resource", {}
                )
            cluster.calls[
                f"{verb} {resource}{'/' + sub if sub else ''}{'' if name else ' (list)'}"
            ] += 1
            if verb == "POST" and not name and resource in CREATABLE:
                warnings: list[str] = []
                made = cluster.create(
                    resource, ns, self._body(), one.get("fieldValidation", "Warn"), warnings
                )
                self._send(201, made, warnings=warnings)
            elif verb == "GET" and name and sub == "log":
                if self.server.logs is None:
                    raise ApiError(400, "BadRequest", "no kubelet serves logs", {})
                cluster.get("pods", ns, name)
                self._send(200, self.server.logs(ns, name, query), "text/plain")
            elif verb == "GET" and name:
                self._send(200, cluster.get(resource, ns, name))
            elif verb == "GET" and one.get("watch") in ("true", "1"):
                since = one.get("resourceVersion")
                self._stream(
                    cluster.watch(
                        resource,
                        ns,
                        one.get("labelSelector", ""),
                        int(since) if since not in (None, "", "0") else None,
                        float(one.get("timeoutSeconds", 300)),
                    )
                )
            elif verb == "GET":
                items, version = cluster.list(
                    resource, ns, one.get("labelSelector", ""), one.get("fieldSelector", "")
                )
                api_version, kind, _ = KINDS[resource]
                self._send(
                    200,
                    {
                        "apiVersion": api_version,
                        "kind": f"{kind}List",
                        "metadata": {"resourceVersion": str(version)},
                        "items": items,
                    },
                )
            elif verb == "DELETE" and name:
                options = self._body()
                policy = one.get("propagationPolicy") or options.get("propagationPolicy")
                cluster.delete(resource, ns, name, policy)
                self._send(
                    200,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {"name": name, "kind": resource},
                    },
                )
            else:
                raise ApiError(405, "MethodNotAllowed", f"{verb} is not supported here", {})
        except ApiError as exc:
            self._send(exc.code, exc.status())

    def _stream(self, events: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
