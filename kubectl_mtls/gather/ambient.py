"""Read the mesh's ztunnels once per run and build the model of ambient pods from them.

Lazy: nothing is read until an ambient pod needs it, and then only the ztunnel of that pod's node
(`proxy POD`), or every ztunnel at once, concurrently (`check`, `certs -A`).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from ..errors import GatherError, InputError, MtlsError
from ..istio import ztunnel_rbac
from ..model import Proxy, ProxyModel
from ..normalize import pod as podinfo
from ..normalize.ztunnel import ZtunnelCert, ZtunnelView, parse_dump, spiffe
from ..sources import Source

WORKERS = 8


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


class Ambient:
    """The ztunnels of the mesh and the namespaces' labels, read on first use and kept."""

    def __init__(self, source: Source, now: datetime, workers: int = WORKERS) -> None:
        self.source = source
        self.now = now
        self.workers = workers
        self._lock = threading.RLock()
        self._pods: list[dict[str, Any]] | None = None
        self._views: dict[str, ZtunnelView] = {}
        self._failed: dict[str, str] = {}  # ztunnel "ns/pod" -> error line
        self._namespaces: dict[str, dict[str, str]] | None = None
        self.pods_error: str | None = None  # the ztunnel pods could not be listed

    # -- reading ----------------------------------------------------------------------------------
    def namespace_labels(self, namespace: str) -> dict[str, str]:
        with self._lock:
            if self._namespaces is None:
                self._namespaces = {}
                try:
                    for ns in self.source.list_objects("namespaces", None):
                        self._namespaces[str(_meta(ns).get("name") or "")] = _meta(ns).get("labels") or {}
                except InputError:
                    raise
                except MtlsError:
                    pass  # without namespace labels only pod labels and annotations enrol a pod
            return self._namespaces.get(namespace, {})

    def ztunnel_pods(self) -> list[dict[str, Any]]:
        with self._lock:
            if self._pods is None:
                try:
                    self._pods = self.source.ztunnel_pods()
                except InputError:
                    raise
                except MtlsError as exc:
                    self.pods_error = f"cannot list the ztunnel pods: {exc}"
                    self._pods = []
            return self._pods

    def _read(self, pod: dict[str, Any]) -> ZtunnelView | None:
        namespace, name = podinfo.name_of(pod)
        key = f"{namespace}/{name}"
        with self._lock:
            if name in self._views:
                return self._views[name]
            if key in self._failed:
                return None
        node = (pod.get("spec") or {}).get("nodeName")
        try:
            where, raw = self.source.ztunnel_config(namespace, name)
            view = parse_dump(raw, where, namespace, name, node if isinstance(node, str) else None, self.now)
        except MtlsError as exc:
            with self._lock:
                self._failed[key] = str(exc)
            return None
        with self._lock:
            self._views[name] = view
        return view

    def views(self) -> list[ZtunnelView]:
        """Every ztunnel's view (the readable ones), read concurrently."""
        pods = self.ztunnel_pods()
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            found = list(pool.map(self._read, pods))
        return [v for v in found if v is not None]

    def for_node(self, node: str | None) -> ZtunnelView | None:
        """The ztunnel of a node: by the pod's nodeName when known, else by what the dumps say."""
        if not node:
            return None
        pods = self.ztunnel_pods()
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") == node:
                return self._read(pod)
        return next((v for v in self.views() if v.node == node), None)

    @property
    def failures(self) -> list[tuple[str, str]]:
        """(ztunnel "ns/pod", error) for each ztunnel whose config could not be read."""
        with self._lock:
            return sorted(self._failed.items())

    def node_failure(self, node: str | None) -> str | None:
        """Why the ztunnel of `node` could not be read (None: read, or there is none)."""
        if self.pods_error:
            return self.pods_error
        for pod in self.ztunnel_pods():
            if node is not None and (pod.get("spec") or {}).get("nodeName") == node:
                namespace, name = podinfo.name_of(pod)
                return self._failed.get(f"{namespace}/{name}")
        return self.unreadable()

    def unreadable(self) -> str | None:
        """Why no ztunnel could be read at all, if so."""
        if self.pods_error:
            return self.pods_error
        pods = self.ztunnel_pods()
        if pods and not self._views and self._failed:
            return "; ".join(f"{k}: {v}" for k, v in self.failures)
        return None

    def workload(self, namespace: str, name: str, prefer: ZtunnelView | None = None) -> dict[str, Any] | None:
        """The pod's entry in ztunnel's workload list: every ztunnel gets the whole list."""
        if prefer is not None:
            found = prefer.workload(namespace, name)
            if found is not None:
                return found
        for view in self.views():
            found = view.workload(namespace, name)
            if found is not None:
                return found
        return None


def ambient_proxy(ambient: Ambient, namespace: str, name: str, pod: dict[str, Any], enrolment: str | None) -> Proxy:
    """The model of an ambient pod: its ztunnel view, with its identity's certificate as the
    certificate and roots every command compares (certs, rootdiff)."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName") if isinstance(spec.get("nodeName"), str) else None
    notes: list[str] = []
    view = ambient.for_node(node)
    workload = ambient.workload(namespace, name, prefer=view)
    if node is None and workload is not None:
        node = workload["node"]
        view = ambient.for_node(node)
    if view is None:
        why = ambient.node_failure(node)
        if why:
            raise GatherError(f"{namespace}/{name} is an ambient pod, but its ztunnel could not be read: {why}")
        notes.append(f"no ztunnel config read for node {node}" if node else "its node is unknown")
    account = podinfo.service_account(pod)
    identity = workload["identity"] if workload else spiffe("cluster.local", namespace, account)
    cert: ZtunnelCert | None = view.certificates.get(identity) if view else None
    redirection = (_meta(pod).get("annotations") or {}).get(podinfo.REDIRECTION)
    model: ProxyModel = {
        "pod": name,
        "namespace": namespace,
        "service_account": account,
        "identity": identity,
        "sidecar": "ambient",
        "proxy": None,
        "certificates": [c.info for c in cert.chain] if cert else [],  # type: ignore[misc]
        "chain_error": cert.chain_error if cert else None,
        "roots": [r.info for r in cert.roots] if cert else [],  # type: ignore[misc]
        "secrets": [],
        "clusters": [],
        "inbound": [],
        "incomplete": notes,
    }
    policies = ztunnel_rbac.applicable(view.policies, workload) if (view and workload) else []
    model["ambient"] = {
        "node": node,
        "ztunnel": view.ref if view else None,
        "enrolled_by": enrolment,
        "redirection": redirection if isinstance(redirection, str) else None,
        "protocol": workload["protocol"] if workload else None,
        "workload_uid": workload["uid"] if workload else None,
        "waypoint": _waypoints(view, workload),
        "policies": [{k: p[k] for k in ("namespace", "name", "scope", "action", "rules", "dry_run")} for p in policies],
        "certificate": cert.summary() if cert else None,
    }
    if workload is None and view is not None:
        notes.append(f"ztunnel {view.ref} does not list this pod as a workload")
    if view is not None and cert is None and workload is not None and workload["protocol"] == "HBONE":
        notes.append(f"ztunnel {view.ref} holds no certificate for {identity}")
    return Proxy(model=model, pod=pod, chain=cert.chain if cert else [], roots=cert.roots if cert else [])


def _waypoints(view: ZtunnelView | None, workload: dict[str, Any] | None) -> dict[str, Any]:
    """Waypoints that serve the pod: its own (workload level) and its Services' (service level)."""
    services = []
    if view and workload:
        for service in view.services:
            if workload["uid"] in service["endpoint_uids"] and service["waypoint"]:
                services.append({"service": service["hostname"], **service["waypoint"]})
    return {"workload": workload["waypoint"] if workload else None, "services": services}


class AmbientMesh:
    """What the ambient checks read: the ztunnels' views, the enrolled pods' models, ztunnel logs.

    Built only when the scope has ambient pods, so a sidecar-only mesh costs no ztunnel call."""

    def __init__(self, source: Source, now: datetime, workers: int = WORKERS) -> None:
        self.reader = Ambient(source, now, workers)
        self.enrolment: dict[tuple[str, str], str] = {}  # every pod of the scope that belongs to ambient
        self.proxies: dict[tuple[str, str], Proxy] = {}  # enrolled target pods' models
        self.views: list[ZtunnelView] = []
        self.logs: dict[tuple[str, str], str] = {}  # ztunnel (ns, pod) -> log text
        self.notes: list[tuple[str, str]] = []  # (what, why) that could not be read
        self.unavailable: str | None = None

    def load(
        self,
        pods: list[dict[str, Any]],
        targets: list[dict[str, Any]],
        namespace_labels: dict[str, dict[str, str]],
        logs: bool = False,
        tail: int = 500,
    ) -> None:
        for pod in pods:
            ns, name = podinfo.name_of(pod)
            why = podinfo.ambient_enrolment(pod, namespace_labels.get(ns))
            if why is not None:
                self.enrolment[(ns, name)] = why
        wanted = [p for p in targets if podinfo.name_of(p) in self.enrolment] if self.enrolment else []
        if not wanted:  # no ambient pod to judge: no ztunnel call
            return
        self.views = self.reader.views()
        for what, why in self.reader.failures:
            self.notes.append((f"ztunnel {what}", why))
        if self.reader.pods_error:
            self.notes.append(("ztunnel pods", self.reader.pods_error))
        if not self.views:
            self.unavailable = self.reader.unreadable() or "no ztunnel pod found (label app=ztunnel)"
            if not self.reader.pods_error and not self.reader.failures:
                self.notes.append(("ztunnels", self.unavailable))
            return
        for pod in wanted:
            ns, name = podinfo.name_of(pod)
            try:
                self.proxies[(ns, name)] = ambient_proxy(self.reader, ns, name, pod, self.enrolment[(ns, name)])
            except MtlsError as exc:
                self.notes.append((f"pod {ns}/{name}", str(exc)))
        if logs:
            for pod in self.reader.ztunnel_pods():
                ns, name = podinfo.name_of(pod)
                try:
                    self.logs[(ns, name)] = self.reader.source.pod_log(ns, name, "istio-proxy", tail)
                except MtlsError as exc:
                    self.notes.append((f"ztunnel log of {ns}/{name}", str(exc)))

    def view_of_node(self, node: str | None) -> ZtunnelView | None:
        return next((v for v in self.views if node and v.node == node), None)
