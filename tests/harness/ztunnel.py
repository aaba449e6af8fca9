"""Ambient test bed: ztunnel config dumps in ztunnel's real shape, with certificates from the harness PKI,
plus the Kubernetes objects of an ambient mesh, served live (API double + istioctl double) or saved.

Shapes follow ztunnel's admin `/config_dump` as `istioctl ztunnel-config all POD -o json` prints it
(`istioctl/pkg/writer/ztunnel/configdump/api.go`; a real one is in the corpus): `workloads` and
`services` as maps keyed by UID / `namespace/hostname` (or lists, `as_lists=True`, as older versions
print them), `policies`, `certificates` with `certChain` and `rootCerts` whose `pem` is the PEM text,
serials in decimal, dates RFC 3339, `workloadState`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.pki import Issued, spiffe_id

ISTIO_NS = "istio-system"


def cert_dump(issued: Issued) -> dict[str, Any]:
    cert = issued.cert
    return {
        "pem": issued.leaf_pem.decode(),
        "serialNumber": str(cert.serial_number),
        "validFrom": cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "expirationTime": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def certificate(identity: str, state: str, chain: list[Issued] = (), roots: list[Issued] = ()) -> dict[str, Any]:  # type: ignore[assignment]
    """One `certificates` entry; ztunnel prints no chain for `Initializing` / `Unavailable: ...`."""
    available = state == "Available"
    return {
        "identity": identity,
        "state": state,
        "certChain": [cert_dump(c) for c in chain] if available else [],
        "rootCerts": [cert_dump(r) for r in roots] if available else [],
    }


@dataclass
class Pod:
    namespace: str
    name: str
    service_account: str
    node: str
    ip: str
    app: str | None = None
    captured: bool = True  # istio-cni set ambient.istio.io/redirection: enabled
    sidecar: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    waypoint: str | None = None  # workload-level waypoint Service name (same namespace)
    ports: list[int] = field(default_factory=lambda: [8080])

    @property
    def identity(self) -> str:
        return spiffe_id(self.namespace, self.service_account)

    @property
    def uid(self) -> str:
        return f"Kubernetes//Pod/{self.namespace}/{self.name}"

    def k8s(self) -> dict[str, Any]:
        labels = dict(self.labels)
        if self.app:
            labels.setdefault("app", self.app)
        annotations = {"ambient.istio.io/redirection": "enabled"} if self.captured and not self.sidecar else {}
        containers: list[dict[str, Any]] = [
            {"name": "app", "image": "app:1", "ports": [{"containerPort": p, "protocol": "TCP"} for p in self.ports]}
        ]
        if self.sidecar:
            containers.append({"name": "istio-proxy", "image": "proxyv2:1.28.0"})
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels, "annotations": annotations},
            "spec": {"serviceAccountName": self.service_account, "nodeName": self.node, "containers": containers},
            "status": {"phase": "Running", "podIP": self.ip, "podIPs": [{"ip": self.ip}]},
        }


@dataclass
class Mesh:
    """An ambient mesh: nodes with one ztunnel each, pods, and what each ztunnel holds."""

    root: Issued
    pods: list[Pod] = field(default_factory=list)
    namespaces: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> labels
    objects: list[dict[str, Any]] = field(default_factory=list)  # services, policies, NetworkPolicies...
    policies: list[dict[str, Any]] = field(default_factory=list)  # ztunnel-shaped L4 policies
    services: list[dict[str, Any]] = field(default_factory=list)  # ztunnel-shaped services
    certs: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (node, identity) -> entry
    node_roots: dict[str, Issued] = field(default_factory=dict)  # a node whose ztunnel trusts another root
    as_lists: bool = False
    logs: dict[str, str] = field(default_factory=dict)  # node -> ztunnel log text
    withheld: set[tuple[str, str]] = field(default_factory=set)  # (node, identity) the ztunnel holds nothing for

    def nodes(self) -> list[str]:
        return sorted({p.node for p in self.pods})

    @staticmethod
    def ztunnel_name(node: str) -> str:
        return f"ztunnel-{node}"

    def issue(self, node: str, identity: str, state: str = "Available", chain: list[Issued] | None = None) -> None:
        """What `node`'s ztunnel holds for `identity` (default: a fresh cert from the mesh root)."""
        from harness.pki import make_workload

        root = self.node_roots.get(node, self.root)
        if chain is None and state == "Available":
            ns, sa = identity.split("/ns/")[1].split("/sa/")
            chain = [make_workload(root, ns, sa)]
        self.certs[(node, identity)] = certificate(identity, state, chain or [], [root])

    def workload(self, pod: Pod) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "uid": pod.uid,
            "workloadIps": [pod.ip],
            "protocol": "HBONE" if pod.captured and not pod.sidecar else "TCP",
            "name": pod.name,
            "namespace": pod.namespace,
            "serviceAccount": pod.service_account,
            "workloadName": pod.app or pod.name,
            "workloadType": "pod",
            "canonicalName": pod.app or pod.name,
            "canonicalRevision": "latest",
            "clusterId": "Kubernetes",
            "trustDomain": "cluster.local",
            "node": pod.node,
            "status": "Healthy",
            "hostname": "",
            "capacity": 1,
        }
        if pod.waypoint:
            entry["waypoint"] = {
                "destination": f"/{self.waypoint_vip(pod.namespace, pod.waypoint)}",
                "hboneMtlsPort": 15008,
            }
        selected = [f"{p['namespace']}/{p['name']}" for p in self.policies if _selects(p, pod)]
        if selected:
            entry["authorizationPolicies"] = selected
        return entry

    @staticmethod
    def waypoint_vip(namespace: str, name: str) -> str:
        return f"10.96.{len(namespace) % 200}.{len(name) % 200 + 50}"

    def dump(self, node: str) -> dict[str, Any]:
        ztunnel = Pod(
            ISTIO_NS, self.ztunnel_name(node), "ztunnel", node, f"10.244.{self.nodes().index(node)}.2", captured=False
        )
        workloads = [self.workload(p) for p in [*self.pods, ztunnel]]
        services = list(self.services)
        certs = [c for (n, _), c in sorted(self.certs.items()) if n == node]
        return {
            "workloads": workloads if self.as_lists else {w["uid"]: w for w in workloads},
            "services": services if self.as_lists else {f"{s['namespace']}/{s['hostname']}": s for s in services},
            "policies": [{k: v for k, v in p.items() if not k.startswith("_")} for p in self.policies],
            "certificates": certs,
            "workloadState": {},
        }

    def issue_all(self) -> None:
        """Every node's ztunnel holds an Available certificate for each enrolled identity on it."""
        for pod in self.pods:
            key = (pod.node, pod.identity)
            if pod.captured and not pod.sidecar and key not in self.certs and key not in self.withheld:
                self.issue(pod.node, pod.identity)

    def kubernetes(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for name, labels in {ISTIO_NS: {}, **self.namespaces}.items():
            out.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
        out.extend(p.k8s() for p in self.pods)
        for node in self.nodes():
            out.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": self.ztunnel_name(node), "namespace": ISTIO_NS, "labels": {"app": "ztunnel"}},
                    "spec": {
                        "nodeName": node,
                        "serviceAccountName": "ztunnel",
                        "containers": [{"name": "istio-proxy", "image": "ztunnel:1.28.0"}],
                    },
                    "status": {"phase": "Running"},
                }
            )
        out.extend(self.objects)
        return out

    def serve(self, cluster: Any) -> None:
        """Objects into the API double; each ztunnel's dump and log behind the istioctl double."""
        self.issue_all()
        for obj in self.kubernetes():
            cluster.api.add(obj)
        for node in self.nodes():
            path = cluster.workdir / f"ztunnel-{node}.json"
            path.write_text(json.dumps(self.dump(node), indent=2))
            cluster.set_proxy(ISTIO_NS, self.ztunnel_name(node), {"ztunnel": str(path)})
            cluster.api.set_log(ISTIO_NS, self.ztunnel_name(node), "istio-proxy", self.logs.get(node, ""))

    def write_dump(self, node: str, path: Path) -> Path:
        self.issue_all()
        path.write_text(json.dumps(self.dump(node), indent=2))
        return path


def _selects(policy: dict[str, Any], pod: Pod) -> bool:
    selector = policy.get("_selector")
    return (
        policy.get("scope") == "WorkloadSelector"
        and policy.get("namespace") == pod.namespace
        and isinstance(selector, dict)
        and all(({**pod.labels, **({"app": pod.app} if pod.app else {})}).get(k) == v for k, v in selector.items())
    )


def l4_policy(
    namespace: str,
    name: str,
    action: str = "Allow",
    rules: list[Any] | None = None,
    selector: dict[str, str] | None = None,
    scope: str | None = None,
) -> dict[str, Any]:
    """A ztunnel-shaped policy; `_selector` (not printed) says which pods list it."""
    policy: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "scope": scope or ("WorkloadSelector" if selector else "Namespace"),
        "action": action,
        "rules": rules or [],
    }
    if selector:
        policy["_selector"] = selector
    return policy


def access_log(
    src: Pod | None,
    dst: Pod,
    error: str,
    direction: str = "inbound",
    when: str = "2026-12-06T07:00:00.123456Z",
    src_ip: str | None = None,
    service: str | None = None,
) -> str:
    """One ztunnel access log line as ztunnel writes it (tab-separated prefix, then key=value fields)."""
    fields = [f"src.addr={(src.ip if src else src_ip) or '10.0.0.1'}:43210"]
    if src:
        fields += [f'src.workload="{src.name}"', f'src.namespace="{src.namespace}"', f'src.identity="{src.identity}"']
    fields += [f"dst.addr={dst.ip}:15008", f"dst.hbone_addr={dst.ip}:{dst.ports[0]}"]
    if service:
        fields.append(f'dst.service="{service}"')
    fields += [
        f'dst.workload="{dst.name}"',
        f'dst.namespace="{dst.namespace}"',
        f'dst.identity="{dst.identity}"',
        f'direction="{direction}"',
        "bytes_sent=0",
        "bytes_recv=0",
        'duration="0ms"',
        f'error="{error}"',
    ]
    return f"{when}\terror\taccess\tconnection complete\t" + " ".join(fields) + "\n"
