"""Ready-made meshes of real Envoy sidecars, with the Pod objects a cluster would show for them.

`rotation` is the bundled demo (examples/rotation): a root CA rotation where one deployment was
not restarted, so it still holds the old root and a certificate signed by it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from harness.envoy import Mesh, OutboundCluster, RunningSidecar, Sidecar
from harness.pki import Issued, make_root, make_workload

NAMESPACE = "shop"
YEARS = 5  # the demo's certificates stay valid for years, so it shows the fault, not an expiry


@dataclass
class Scenario:
    namespace: str
    sidecars: dict[str, RunningSidecar] = field(default_factory=dict)  # pod name -> sidecar
    pods: list[dict[str, Any]] = field(default_factory=list)  # Pod objects for the API double
    objects: list[dict[str, Any]] = field(default_factory=list)  # namespaces, services, SAs
    roots: dict[str, Issued] = field(default_factory=dict)


def pod_object(
    namespace: str,
    name: str,
    app: str,
    service_account: str,
    *,
    sidecar: str = "present",
    owner: tuple[str, str] | None = None,
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    """A Pod as the API returns it: injected (container or native sidecar) or not."""
    labels = {"app": app}
    refs = []
    if owner:
        kind, owner_name = owner
        if kind == "ReplicaSet":
            labels["pod-template-hash"] = owner_name.rsplit("-", 1)[1]
        refs = [
            {"apiVersion": "apps/v1", "kind": kind, "name": owner_name, "controller": True, "uid": f"uid-{owner_name}"}
        ]
    if sidecar != "absent":
        labels["security.istio.io/tlsMode"] = "istio"
    proxy = {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.28.0", "args": ["proxy", "sidecar"]}
    containers = [{"name": app, "image": f"example/{app}:1.0", "ports": [{"containerPort": 8080}]}]
    init: list[dict[str, Any]] = []
    if sidecar == "present":
        containers.append(proxy)
    elif sidecar == "native":
        init.append({**proxy, "restartPolicy": "Always"})
    spec: dict[str, Any] = {"serviceAccountName": service_account, "containers": containers}
    if init:
        spec["initContainers"] = init
    annotations = {"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'} if sidecar != "absent" else {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": refs,
            "creationTimestamp": created,
        },
        "spec": spec,
        "status": {"phase": "Running", "podIP": "127.0.0.1"},
    }


def rotation(mesh: Mesh, now: dt.datetime | None = None) -> Scenario:
    """frontend and payments were restarted after the root rotation; orders was not."""
    now = now or dt.datetime.now(dt.UTC)
    ns = NAMESPACE
    old_root = make_root(not_before=now - dt.timedelta(days=700), days=3650)
    new_root = make_root(not_before=now - dt.timedelta(days=3), days=3650)
    hours = YEARS * 365 * 24

    def cert(root: Issued, sa: str, start: dt.timedelta) -> Issued:
        return make_workload(root, ns, sa, not_before=now - start, hours=hours, chain=[root])

    sc = Scenario(namespace=ns, roots={"old": old_root, "new": new_root})
    orders_cert = cert(old_root, "orders", dt.timedelta(days=30))
    payments_cert = cert(new_root, "payments", dt.timedelta(days=2))
    frontend_cert = cert(new_root, "frontend", dt.timedelta(days=2))
    orders = mesh.add(
        Sidecar(
            pod="orders-7f5b9c6d8-wq4zn",
            namespace=ns,
            service_account="orders",
            cert_chain_pem=orders_cert.cert_pem,
            key_pem=orders_cert.key_pem,
            root_pems=[old_root.cert_pem],
            inbound_mode="STRICT",
            labels={"app": "orders"},
        )
    )
    payments = mesh.add(
        Sidecar(
            pod="payments-5d8c7b9f6-h3m9t",
            namespace=ns,
            service_account="payments",
            cert_chain_pem=payments_cert.cert_pem,
            key_pem=payments_cert.key_pem,
            root_pems=[new_root.cert_pem],
            inbound_mode="STRICT",
            labels={"app": "payments"},
        )
    )
    frontend = mesh.add(
        Sidecar(
            pod="frontend-6c9f7d8b4-k2x7p",
            namespace=ns,
            service_account="frontend",
            cert_chain_pem=frontend_cert.cert_pem,
            key_pem=frontend_cert.key_pem,
            root_pems=[new_root.cert_pem],
            labels={"app": "frontend"},
            outbound=[
                OutboundCluster(
                    f"orders.{ns}.svc.cluster.local",
                    8080,
                    orders.inbound_port or 0,
                    expected_sans=[f"spiffe://cluster.local/ns/{ns}/sa/orders"],
                ),
                OutboundCluster(
                    f"payments.{ns}.svc.cluster.local",
                    8080,
                    payments.inbound_port or 0,
                    expected_sans=[f"spiffe://cluster.local/ns/{ns}/sa/payments"],
                ),
            ],
        )
    )
    sc.sidecars = {s.spec.pod: s for s in (frontend, orders, payments)}
    sc.pods = [
        pod_object(
            ns,
            frontend.spec.pod,
            "frontend",
            "frontend",
            owner=("ReplicaSet", "frontend-6c9f7d8b4"),
            created="2026-11-20T09:12:00Z",
        ),
        pod_object(
            ns,
            orders.spec.pod,
            "orders",
            "orders",
            owner=("ReplicaSet", "orders-7f5b9c6d8"),
            created="2026-10-24T14:03:00Z",
        ),
        pod_object(
            ns,
            payments.spec.pod,
            "payments",
            "payments",
            sidecar="native",
            owner=("ReplicaSet", "payments-5d8c7b9f6"),
            created="2026-11-20T09:15:00Z",
        ),
        pod_object(
            ns,
            "reports-29384750-xk2lp",
            "reports",
            "default",
            sidecar="absent",
            owner=("Job", "reports-29384750"),
            created="2026-11-22T02:00:00Z",
        ),
    ]
    sc.objects = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"istio-injection": "enabled"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}},
        *(
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}}
            for sa in ("default", "frontend", "orders", "payments")
        ),
        *(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": app, "namespace": ns},
                "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
            }
            for app in ("orders", "payments")
        ),
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "istio-system", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"mtls": {"mode": "STRICT"}},
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "istio-ca-root-cert", "namespace": ns},
            "data": {"root-cert.pem": new_root.cert_pem.decode()},
        },
    ]
    return sc
