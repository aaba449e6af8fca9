"""The ambient checks through the CLI: each scenario runs live (API double + istioctl double serving
ztunnel dumps with harness-PKI certificates) and again on the snapshot `snapshot` wrote, and both must
give the same verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_path, run_cli
from harness.cluster import FakeCluster
from harness.pki import make_root
from harness.ztunnel import ISTIO_NS, Mesh, Pod, access_log

NS = "shop"
AMBIENT_CHECKS = {
    "ambient-not-enrolled",
    "ztunnel-cert",
    "hbone-blocked",
    "ambient-peerauthn",
    "waypoint-missing",
    "waypoint-policy-unbound",
    "ztunnel-errors",
    "ztunnel-allow-nothing",
}


def base_mesh() -> Mesh:
    mesh = Mesh(root=make_root())
    mesh.namespaces[NS] = {"istio.io/dataplane-mode": "ambient"}
    mesh.pods += [
        Pod(NS, "client-1", "client", "node-a", "10.244.0.5", app="client"),
        Pod(NS, "server-1", "server", "node-b", "10.244.1.6", app="server"),
    ]
    mesh.objects.append(service(NS, "server", {"app": "server"}, 8080))
    return mesh


def service(ns: str, name: str, selector: dict[str, str], port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": port, "targetPort": port}]},
    }


def run_both(tmp_path: Path, mesh: Mesh, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`check ARGS -o json --logs` live, then on the snapshot of the same cluster."""
    snap = tmp_path / "snap"
    with FakeCluster(tmp_path / "cluster") as fake:
        mesh.serve(fake)
        live = run_cli("check", *args, "-o", "json", "--logs", env=fake.env())
        assert "Traceback" not in live.stderr, live.stderr
        saved = run_cli("snapshot", "-A", "-d", str(snap), "--logs", env=fake.env())
        assert saved.returncode == 0, saved.stderr
    replay = run_cli("check", *args, "-o", "json", "--logs", "--snapshot", str(snap))
    assert "Traceback" not in replay.stderr, replay.stderr
    return json.loads(live.stdout), json.loads(replay.stdout)


def ambient(report: dict[str, Any], slug: str | None = None) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["check"] in AMBIENT_CHECKS and (slug is None or f["check"] == slug)]


def same(live: dict[str, Any], replay: dict[str, Any]) -> list[dict[str, Any]]:
    assert ambient(live) == ambient(replay)
    return ambient(live)


def test_healthy_ambient_namespace_passes(tmp_path: Path) -> None:
    live, replay = run_both(tmp_path, base_mesh(), "-n", NS)
    assert same(live, replay) == []
    statuses = {c["check"]: c["status"] for c in live["checks"]}
    assert {statuses[c] for c in AMBIENT_CHECKS} == {"ok"}, statuses
    # only the sidecar log checks lack input here (no sidecar, no istiod): nothing about ambient
    assert {i["what"] for i in live["incomplete"]} <= {"check istiod-cert-errors", "check proxy-tls-errors"}


def test_pod_not_captured_is_not_enrolled(tmp_path: Path) -> None:
    mesh = base_mesh()
    mesh.pods.append(Pod(NS, "legacy-1", "legacy", "node-b", "10.244.1.7", app="legacy", captured=False))
    live, replay = run_both(tmp_path, mesh, "-n", NS)
    found = same(live, replay)
    assert [(f["check"], f["name"], f["severity"]) for f in found] == [("ambient-not-enrolled", "legacy-1", "error")]
    assert "lists it as TCP" in found[0]["message"] and "no ambient.istio.io/redirection" in found[0]["message"]
    assert found[0]["evidence"]["node"] == "node-b"


def test_unavailable_certificate_names_ztunnels_reason(tmp_path: Path) -> None:
    mesh = base_mesh()
    reason = (
        "Unavailable: signing gRPC error (The caller does not have permission): "
        "authentication failure: impersonation not allowed"
    )
    mesh.issue("node-b", "spiffe://cluster.local/ns/shop/sa/server", reason)
    live, replay = run_both(tmp_path, mesh, "-n", NS)
    found = same(live, replay)
    assert [(f["check"], f["name"], f["severity"]) for f in found] == [("ztunnel-cert", "ztunnel-node-b", "error")]
    assert "refused to sign" in found[0]["message"]
    assert "CA_TRUSTED_NODE_ACCOUNTS" in found[0]["hint"]
    assert found[0]["evidence"]["pods"] == ["shop/server-1"]


def test_two_ztunnels_with_different_roots(tmp_path: Path) -> None:
    mesh = base_mesh()
    mesh.node_roots["node-b"] = make_root(org="other.local")
    live, replay = run_both(tmp_path, mesh, "-A")
    found = same(live, replay)
    assert len(found) == 1 and found[0]["check"] == "ztunnel-cert"
    assert "trusts other roots" in found[0]["message"] and "UnknownIssuer" in found[0]["message"]
    assert found[0]["name"] in ("ztunnel-node-a", "ztunnel-node-b")
    assert found[0]["hint"].startswith("kubectl delete pod ztunnel-node-")


def netpol(name: str, ingress_ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "podSelector": {"matchLabels": {"app": "server"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": ingress_ports}],
            **spec,
        },
    }


def test_networkpolicy_without_15008_blocks_hbone(tmp_path: Path) -> None:
    mesh = base_mesh()
    mesh.objects.append(netpol("server-from-client", [{"protocol": "TCP", "port": 8080}]))
    live, replay = run_both(tmp_path, mesh, "-n", NS)
    found = same(live, replay)
    assert [(f["check"], f["kind"], f["name"]) for f in found] == [
        ("hbone-blocked", "NetworkPolicy", "server-from-client")
    ]
    assert found[0]["evidence"]["pods"] == ["shop/server-1", "shop/client-1"]
    assert '"path":"/spec/ingress/0/ports/-"' in found[0]["hint"] and '"port":15008' in found[0]["hint"]


def test_networkpolicy_with_15008_in_a_port_range_passes(tmp_path: Path) -> None:
    mesh = base_mesh()
    ports = [{"protocol": "TCP", "port": 8080}]
    mesh.objects.append(netpol("server-from-client", ports))
    allow = netpol("hbone", [{"protocol": "TCP", "port": 15000, "endPort": 15010}])
    allow["spec"]["ingress"][0]["from"] = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}}}]
    mesh.objects.append(allow)
    live, replay = run_both(tmp_path, mesh, "-n", NS)
    assert same(live, replay) == []


def test_l7_policy_without_waypoint_and_missing_waypoint(tmp_path: Path) -> None:
    mesh = base_mesh()
    mesh.namespaces[NS]["istio.io/use-waypoint"] = "waypoint"
    mesh.objects.append(
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "get-only", "namespace": NS},
            "spec": {
                "selector": {"matchLabels": {"app": "server"}},
                "action": "ALLOW",
                "rules": [{"to": [{"operation": {"methods": ["GET"]}}]}],
            },
        }
    )
    live, replay = run_both(tmp_path, mesh, "-n", NS)
    found = {(f["check"], f["name"], f["severity"]) for f in same(live, replay)}
    assert found == {
        ("waypoint-policy-unbound", "get-only", "error"),
        ("waypoint-missing", NS, "error"),
    }


def test_existing_programmed_waypoint_passes(tmp_path: Path) -> None:
    mesh = base_mesh()
    mesh.namespaces[NS]["istio.io/use-waypoint"] = "waypoint"
    mesh.objects.append(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": NS},
            "spec": {"gatewayClassName": "istio-waypoint"},
            "status": {"conditions": [{"type": "Programmed", "status": "True"}]},
        }
    )
    live, replay = run_both(tmp_path, mesh, "-n", NS)
    assert same(live, replay) == []


def test_ambient_webhook_under_strict_and_disable(tmp_path: Path) -> None:
    mesh = base_mesh()
    mesh.objects += [
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": NS},
            "spec": {"mtls": {"mode": "STRICT"}},
        },
        {
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "client-off", "namespace": NS},
            "spec": {"selector": {"matchLabels": {"app": "client"}}, "mtls": {"mode": "DISABLE"}},
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "server-validator"},
            "webhooks": [
                {
                    "name": "validate.shop.io",
                    "clientConfig": {"service": {"namespace": NS, "name": "server", "port": 8080}},
                }
            ],
        },
    ]
    live, replay = run_both(tmp_path, mesh, "-n", NS)
    found = {(f["check"], f["kind"], f["name"], f["severity"]) for f in same(live, replay)}
    assert found == {("ambient-peerauthn", "PeerAuthentication", "client-off", "warning")}
    # the webhook behind STRICT on an ambient pod is apiserver-caller-strict's, in the same report
    for report in (live, replay):
        webhook = [f for f in report["findings"] if f["check"] == "apiserver-caller-strict"]
        assert [(f["name"], f["evidence"]["pods"]) for f in webhook] == [("server-validator", ["shop/server-1"])]


def test_ztunnel_log_errors_are_classified(tmp_path: Path) -> None:
    mesh = base_mesh()
    client, server = mesh.pods
    mesh.logs["node-b"] = (
        access_log(client, server, "connection closed due to policy rejection: explicitly denied by: shop/deny-client")
        + access_log(
            client, server, "connection closed due to policy rejection: explicitly denied by: shop/deny-client"
        )
        + "2026-12-06T07:00:01.000000Z\tinfo\taccess\tconnection complete\tsrc.addr=10.244.0.5:1 bytes_sent=5\n"
    )
    mesh.logs["node-a"] = access_log(
        client,
        server,
        "connection timed out, maybe a NetworkPolicy is blocking HBONE port 15008: deadline has elapsed",
        direction="outbound",
    )
    live, replay = run_both(tmp_path, mesh, "-n", NS)
    found = sorted((f["evidence"]["log_class"], f["evidence"]["direction"], f["message"]) for f in same(live, replay))
    assert [(c, d) for c, d, _ in found] == [("hbone-blocked", "outbound"), ("policy-denied", "inbound")]
    assert "2x policy-denied" in found[1][2] and "shop/client-1 -> shop/server-1" in found[1][2]


def test_check_all_on_a_mixed_mesh_is_one_report(tmp_path: Path) -> None:
    """Sidecars (the bundled example's real Envoy dumps) and ambient pods in one `check -A`."""
    from conftest import REPO

    example = REPO / "examples" / "rotation"
    mesh = base_mesh()
    with FakeCluster(tmp_path / "cluster") as fake:
        for path in sorted((example / "kubernetes").glob("*.json")):
            for obj in json.loads(path.read_text())["items"]:
                obj.setdefault("apiVersion", "v1")
                if obj.get("kind") != "Namespace" or obj["metadata"]["name"] != ISTIO_NS:
                    fake.api.add(obj)
        for dump in sorted((example / "proxies" / NS).glob("*.json")):
            fake.set_proxy(NS, dump.stem, {"dump": str(dump)})
        mesh.namespaces = {"payments": {"istio.io/dataplane-mode": "ambient"}}  # shop keeps the example's labels
        for pod in mesh.pods:
            pod.namespace = "payments"
        mesh.objects = [service("payments", "server", {"app": "server"}, 8080)]
        mesh.serve(fake)
        proc = run_cli("check", "-A", "-o", "json", env=fake.env())
    report = json.loads(proc.stdout)
    checks = {f["check"] for f in report["findings"]}
    assert "root-mismatch" in checks or "cert-chain-untrusted" in checks  # the example's sidecar problem
    assert "ambient-workload" in checks  # the ambient pods, in the same report
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert statuses["ambient-not-enrolled"] == "ok" and statuses["ztunnel-cert"] == "ok"
    assert proc.returncode == 1


def test_real_ztunnel_dump_gives_the_findings_it_implies(tmp_path: Path) -> None:
    """Istio's own ztunnel dump, with namespaces `default` and `bookinfo` labelled ambient as in that
    cluster: TCP workloads there are not enrolled, the Initializing and Unavailable certificates are
    reported (not `no longer needed`), and the allow-nothing policy; nothing else."""
    dump_path = corpus_path("istio/istioctl/pkg/writer/ztunnel/configdump/testdata/dump.json")
    dump = json.loads(dump_path.read_text())
    snap = tmp_path / "snap"
    (snap / "kubernetes").mkdir(parents=True)
    (snap / "ztunnel").mkdir()
    (snap / "ztunnel" / "ztunnel-xljhg.json").write_bytes(dump_path.read_bytes())
    pods = []
    for w in dump["workloads"].values():
        labels = {"app": w["canonicalName"]}
        if "waypoint" in w["name"]:
            labels["gateway.networking.k8s.io/gateway-name"] = w["canonicalName"]
        if w["name"].startswith("ztunnel-"):
            labels = {"app": "ztunnel"}
        annotations = {"ambient.istio.io/redirection": "enabled"} if w["protocol"] == "HBONE" else {}
        pods.append(
            {
                "metadata": {
                    "name": w["name"],
                    "namespace": w["namespace"],
                    "labels": labels,
                    "annotations": annotations,
                },
                "spec": {
                    "nodeName": w["node"],
                    "serviceAccountName": w["serviceAccount"],
                    "containers": [{"name": "app"}],
                },
                "status": {"phase": "Running", "podIP": w["workloadIps"][0] if w.get("workloadIps") else None},
            }
        )
    namespaces = [
        {
            "metadata": {
                "name": n,
                "labels": {"istio.io/dataplane-mode": "ambient"} if n in ("default", "bookinfo") else {},
            }
        }
        for n in sorted({w["namespace"] for w in dump["workloads"].values()})
    ]
    (snap / "kubernetes" / "pods.json").write_text(json.dumps({"items": pods}))
    (snap / "kubernetes" / "namespaces.json").write_text(json.dumps({"items": namespaces}))
    proc = run_cli(
        "check", "-A", "-o", "json", "--snapshot", str(snap), env={"KUBECTL_MTLS_NOW": "2023-03-21T20:00:00Z"}
    )
    report = json.loads(proc.stdout)
    found = sorted((f["check"], f["namespace"], f["name"], f["severity"]) for f in ambient(report))
    not_enrolled = {(n, p) for c, n, p, _ in found if c == "ambient-not-enrolled"}
    assert not_enrolled == {("default", "httpbin-7447985f87-t8hv7")}
    certs = [f for f in ambient(report, "ztunnel-cert")]
    states = sorted(f["evidence"]["state"].split(":")[0] for f in certs)
    assert states == ["Initializing", "Unavailable"]
    assert all("no longer needed" not in f["message"] for f in certs)
    allow_nothing = ambient(report, "ztunnel-allow-nothing")
    assert [f["name"] for f in allow_nothing] == ["allow-nothing"]
    assert {c for c, *_ in found} == {"ambient-not-enrolled", "ztunnel-cert", "ztunnel-allow-nothing"}


@pytest.mark.parametrize("as_lists", [False, True])
def test_dump_shapes_give_the_same_verdicts(tmp_path: Path, as_lists: bool) -> None:
    mesh = base_mesh()
    mesh.as_lists = as_lists
    mesh.pods.append(Pod(NS, "legacy-1", "legacy", "node-b", "10.244.1.7", app="legacy", captured=False))
    live, replay = run_both(tmp_path, mesh, "-n", NS)
    assert [f["name"] for f in same(live, replay)] == ["legacy-1"]
